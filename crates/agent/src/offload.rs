//! Segmentation and coalescing for TAP devices opened with `IFF_VNET_HDR`,
//! so a VM's TCP stream crosses the agent as 64 KiB frames, not 1.4 KiB ones.
//!
//! With the virtio header and `TUNSETOFFLOAD` (checksum, TSO, USO), the
//! kernel hands the agent a guest's TCP/UDP bursts unsegmented, with the
//! transport checksum left to "hardware". Before the pipeline sees them
//! they are cut into wire-sized frames with every checksum filled in
//! ([`segment`]): the pipeline, the wire and the peer see ordinary frames.
//! Towards a guest, in-order TCP/IPv4 segments of one flow are joined again
//! into one frame with a virtio header asking the kernel to finish the
//! checksum ([`Coalescer`]), which is what the kernel's own GRO gives a
//! receiver on a kernel bridge.
//!
//! Written here rather than taken from tun-rs's offload helpers: those work
//! on layer-3 packets whose virtio header sits right before the IP header,
//! while a TAP's frames carry an Ethernet header in between. Everything is
//! parsed with bounds checks; a frame that does not add up is refused, never
//! guessed at.

/// `struct virtio_net_hdr` (the 10-byte form a TAP uses by default).
pub const VNET_HDR_LEN: usize = 10;
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;
/// The largest frame a coalesced write may carry (IPv4 total length).
const MAX_IP_LEN: usize = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("shorter than a virtio header")]
    NoHeader,
    #[error("unsupported GSO type {0}")]
    GsoType(u8),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

impl VnetHdr {
    /// Reads the header at the start of `buf` (native byte order: the TAP
    /// was not switched to another).
    pub fn decode(buf: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b = buf.get(..VNET_HDR_LEN).ok_or(OffloadError::NoHeader)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

fn be16(b: &[u8], at: usize) -> Result<u16, OffloadError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(OffloadError::Malformed("truncated header"))
}

fn be32(b: &[u8], at: usize) -> Result<u32, OffloadError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(OffloadError::Malformed("truncated header"))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Ones-complement sum of `data` added to `sum` (not folded).
fn sum(acc: u32, data: &[u8]) -> u32 {
    // Big-endian 64-bit words with the carry wrapped around: the same
    // ones'-complement sum as 16-bit words (2^16 = 1 mod 0xffff), a quarter
    // of the additions. Checksums are most of what cutting a burst costs.
    let mut s: u64 = 0;
    let mut add = |w: u64| {
        let (v, carry) = s.overflowing_add(w);
        s = v + u64::from(carry);
    };
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        add(u64::from_be_bytes(w.try_into().unwrap_or_default()));
    }
    let mut rest = words.remainder().chunks_exact(2);
    for c in &mut rest {
        add(u64::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = rest.remainder() {
        add(u64::from(*last) << 8);
    }
    let mut f = (s & 0xffff_ffff) + (s >> 32);
    f = (f & 0xffff_ffff) + (f >> 32);
    let mut g = (f & 0xffff) + (f >> 16);
    g = (g & 0xffff) + (g >> 16);
    // At most 0xffff: the caller's accumulator keeps its headroom.
    acc.wrapping_add(g as u32)
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Where the IP header starts and which version it is.
fn l3(frame: &[u8]) -> Result<(usize, bool), OffloadError> {
    let mut at = 12;
    let mut ty = be16(frame, at)?;
    if ty == ETHERTYPE_VLAN {
        at += 4;
        ty = be16(frame, at)?;
    }
    match ty {
        ETHERTYPE_IPV4 => Ok((at + 2, false)),
        ETHERTYPE_IPV6 => Ok((at + 2, true)),
        _ => Err(OffloadError::Malformed("not IP")),
    }
}

/// The pseudo-header sum of a transport segment of `len` bytes.
fn pseudo(frame: &[u8], ip: usize, v6: bool, proto: u8, len: usize) -> Result<u32, OffloadError> {
    let addrs = if v6 {
        frame.get(ip + 8..ip + 40)
    } else {
        frame.get(ip + 12..ip + 20)
    }
    .ok_or(OffloadError::Malformed("truncated IP header"))?;
    let len32 = u32::try_from(len).map_err(|_| OffloadError::Malformed("too long"))?;
    Ok(sum(0, addrs)
        .wrapping_add(u32::from(proto))
        .wrapping_add(len32 >> 16)
        .wrapping_add(len32 & 0xffff))
}

/// Fills in the transport checksum of a frame whose header says the kernel
/// left it to us (`NEEDS_CSUM`): the field holds the pseudo-header sum, and
/// the checksum covers `csum_start..`.
fn finish_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let field = start + offset;
    if field + 2 > frame.len() || start > frame.len() {
        return Err(OffloadError::Malformed("checksum outside the frame"));
    }
    let c = !fold(sum(0, &frame[start..]));
    // UDP sends an all-zero checksum as 0xffff.
    put16(frame, field, if c == 0 { 0xffff } else { c });
    Ok(())
}

/// Frames cut from one read, in buffers kept from one read to the next: a
/// burst is some 45 frames, and allocating each afresh (and freeing it on
/// another thread) cost more than cutting it.
#[derive(Debug, Default)]
pub struct Frames {
    bufs: Vec<Vec<u8>>,
    len: usize,
}

impl Frames {
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// A cleared buffer for the next frame.
    fn next(&mut self) -> &mut Vec<u8> {
        if self.len == self.bufs.len() {
            self.bufs.push(Vec::new());
        }
        let b = &mut self.bufs[self.len];
        b.clear();
        self.len += 1;
        b
    }

    /// Appends a copy of `frame` as it is.
    pub fn push(&mut self, frame: &[u8]) {
        self.next().extend_from_slice(frame);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs[..self.len].iter().map(Vec::as_slice)
    }
}

/// Cuts what a TAP read returned (virtio header and frame) into frames the
/// wire carries, each with its checksums complete, in `out` (cleared
/// first; left empty when the read is refused).
pub fn segment(read: &[u8], out: &mut Frames) -> Result<(), OffloadError> {
    out.clear();
    let r = cut(read, out);
    if r.is_err() {
        out.clear();
    }
    r
}

fn cut(read: &[u8], out: &mut Frames) -> Result<(), OffloadError> {
    let hdr = VnetHdr::decode(read)?;
    let frame = &read[VNET_HDR_LEN..];
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            let f = out.next();
            f.extend_from_slice(frame);
            if hdr.flags & F_NEEDS_CSUM != 0 {
                finish_checksum(f, usize::from(hdr.csum_start), usize::from(hdr.csum_offset))?;
            }
            Ok(())
        }
        GSO_TCPV4 | GSO_TCPV6 => segment_tcp(frame, usize::from(hdr.gso_size), out),
        GSO_UDP_L4 => segment_udp(frame, usize::from(hdr.gso_size), out),
        other => Err(OffloadError::GsoType(other)),
    }
}

/// IPv4 header length, or 40 for IPv6 (extension headers are not cut).
fn ip_header_len(frame: &[u8], ip: usize, v6: bool, want: u8) -> Result<usize, OffloadError> {
    if v6 {
        let next = *frame
            .get(ip + 6)
            .ok_or(OffloadError::Malformed("truncated IPv6 header"))?;
        if next != want {
            return Err(OffloadError::Malformed("IPv6 extension headers"));
        }
        Ok(40)
    } else {
        let b = *frame
            .get(ip)
            .ok_or(OffloadError::Malformed("truncated IPv4 header"))?;
        let ihl = usize::from(b & 0x0f) * 4;
        let proto = *frame
            .get(ip + 9)
            .ok_or(OffloadError::Malformed("truncated IPv4 header"))?;
        if b >> 4 != 4 || ihl < 20 || proto != want {
            return Err(OffloadError::Malformed("not the IPv4 header GSO says"));
        }
        Ok(ihl)
    }
}

/// Rewrites the IP header of a segment whose IP payload is `l4_len` bytes:
/// its length, for IPv4 its id (+`index`) and header checksum.
fn fix_ip(f: &mut [u8], ip: usize, ihl: usize, v6: bool, l4_len: usize, index: u16) {
    if v6 {
        put16(f, ip + 4, l4_len as u16);
    } else {
        put16(f, ip + 2, (ihl + l4_len) as u16);
        let id = u16::from_be_bytes([f[ip + 4], f[ip + 5]]).wrapping_add(index);
        put16(f, ip + 4, id);
        put16(f, ip + 10, 0);
        let c = !fold(sum(0, &f[ip..ip + ihl]));
        put16(f, ip + 10, c);
    }
}

fn segment_tcp(frame: &[u8], mss: usize, out: &mut Frames) -> Result<(), OffloadError> {
    let (ip, v6) = l3(frame)?;
    let ihl = ip_header_len(frame, ip, v6, PROTO_TCP)?;
    let tcp = ip + ihl;
    let off = *frame
        .get(tcp + 12)
        .ok_or(OffloadError::Malformed("truncated TCP header"))?;
    let thl = usize::from(off >> 4) * 4;
    let hdrs = tcp + thl;
    if thl < 20 || hdrs > frame.len() {
        return Err(OffloadError::Malformed("TCP header"));
    }
    if mss == 0 {
        return Err(OffloadError::Malformed("GSO size 0"));
    }
    let seq = be32(frame, tcp + 4)?;
    let flags = frame[tcp + 13];
    let payload = &frame[hdrs..];
    let n = payload.len().div_ceil(mss).max(1);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let f = out.next();
        f.extend_from_slice(&frame[..hdrs]);
        f.extend_from_slice(chunk);
        let first = i == 0;
        let last = i + 1 == n;
        let s = seq.wrapping_add((i * mss) as u32);
        f[tcp + 4..tcp + 8].copy_from_slice(&s.to_be_bytes());
        let mut fl = flags;
        if !last {
            fl &= !(TCP_FIN | TCP_PSH);
        }
        if !first {
            fl &= !TCP_CWR;
        }
        f[tcp + 13] = fl;
        let l4_len = thl + chunk.len();
        fix_ip(f, ip, ihl, v6, l4_len, i as u16);
        put16(f, tcp + 16, 0);
        let c = !fold(sum(pseudo(f, ip, v6, PROTO_TCP, l4_len)?, &f[tcp..]));
        put16(f, tcp + 16, c);
    }
    if payload.is_empty() {
        // A header-only "burst": nothing to cut, the checksum still to fill.
        let f = out.next();
        f.extend_from_slice(frame);
        let l4_len = thl;
        put16(f, tcp + 16, 0);
        let c = !fold(sum(pseudo(f, ip, v6, PROTO_TCP, l4_len)?, &f[tcp..]));
        put16(f, tcp + 16, c);
    }
    Ok(())
}

fn segment_udp(frame: &[u8], size: usize, out: &mut Frames) -> Result<(), OffloadError> {
    let (ip, v6) = l3(frame)?;
    let ihl = ip_header_len(frame, ip, v6, PROTO_UDP)?;
    let udp = ip + ihl;
    let hdrs = udp + 8;
    if hdrs > frame.len() {
        return Err(OffloadError::Malformed("UDP header"));
    }
    if size == 0 {
        return Err(OffloadError::Malformed("GSO size 0"));
    }
    for (i, chunk) in frame[hdrs..].chunks(size).enumerate() {
        let f = out.next();
        f.extend_from_slice(&frame[..hdrs]);
        f.extend_from_slice(chunk);
        let l4_len = 8 + chunk.len();
        fix_ip(f, ip, ihl, v6, l4_len, i as u16);
        put16(f, udp + 4, l4_len as u16);
        put16(f, udp + 6, 0);
        let c = !fold(sum(pseudo(f, ip, v6, PROTO_UDP, l4_len)?, &f[udp..]));
        put16(f, udp + 6, if c == 0 { 0xffff } else { c });
    }
    Ok(())
}

/// A TCP/IPv4 segment's identity for joining: where its headers are and what
/// must match for the next one to follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flow {
    ip: usize,
    tcp: usize,
    hdrs: usize,
    seq: u32,
    payload: usize,
}

/// Reads `frame` as a joinable TCP/IPv4 segment: no IP options, not a
/// fragment, flags ACK (PSH allowed: it ends a run), some payload.
fn flow(frame: &[u8]) -> Option<Flow> {
    let (ip, v6) = l3(frame).ok()?;
    if v6 || *frame.get(ip)? != 0x45 || *frame.get(ip + 9)? != PROTO_TCP {
        return None;
    }
    let frag = be16(frame, ip + 6).ok()?;
    if frag & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(be16(frame, ip + 2).ok()?);
    if ip + total != frame.len() {
        return None;
    }
    let tcp = ip + 20;
    let thl = usize::from(*frame.get(tcp + 12)? >> 4) * 4;
    let hdrs = tcp + thl;
    if thl < 20 || hdrs >= frame.len() {
        return None;
    }
    if frame[tcp + 13] & !TCP_PSH != TCP_ACK {
        return None;
    }
    // Only segments that arrived intact join: the joined frame goes up with
    // its checksum marked as the kernel's to finish, so a segment damaged on
    // the way would otherwise reach the guest as good. (GRO checks too.)
    // One that fails passes alone, and the guest's stack drops it.
    if fold(sum(0, &frame[ip..tcp])) != 0xffff {
        return None;
    }
    let p = pseudo(frame, ip, false, PROTO_TCP, frame.len() - tcp).ok()?;
    if fold(sum(p, &frame[tcp..])) != 0xffff {
        return None;
    }
    Some(Flow {
        ip,
        tcp,
        hdrs,
        seq: be32(frame, tcp + 4).ok()?,
        payload: frame.len() - hdrs,
    })
}

/// Joins in-order TCP/IPv4 segments of one flow bound for one TAP into a
/// single frame with a virtio header (`TCPV4`, the first segment's payload
/// size as `gso_size`, checksum left to the kernel). Anything else passes
/// through alone with an empty header.
#[derive(Default)]
pub struct Coalescer {
    /// The run being built: its bytes (virtio header first) and shape.
    run: Vec<u8>,
    first: Option<Flow>,
    /// Segments in the run, the size they must have, the next sequence number.
    count: usize,
    mss: usize,
    next_seq: u32,
    /// The run's last segment was short or pushed: nothing may follow.
    closed: bool,
}

impl Coalescer {
    /// Adds `frame`; writes to `emit` whatever can no longer grow.
    pub fn push(&mut self, frame: &[u8], emit: &mut impl FnMut(Vec<u8>)) {
        let Some(f) = flow(frame) else {
            self.flush(emit);
            Self::alone(frame, emit);
            return;
        };
        if self.joins(frame, &f) {
            self.run.extend_from_slice(&frame[f.hdrs..]);
            self.count += 1;
            self.next_seq = f.seq.wrapping_add(f.payload as u32);
            self.closed = f.payload < self.mss || frame[f.tcp + 13] & TCP_PSH != 0;
            if self.closed {
                self.flush(emit);
            }
            return;
        }
        self.flush(emit);
        self.run = Vec::with_capacity(VNET_HDR_LEN + f.ip + MAX_IP_LEN);
        self.run.extend_from_slice(&[0u8; VNET_HDR_LEN]);
        self.run.extend_from_slice(frame);
        self.mss = f.payload;
        self.count = 1;
        self.next_seq = f.seq.wrapping_add(f.payload as u32);
        self.closed = frame[f.tcp + 13] & TCP_PSH != 0;
        self.first = Some(f);
        if self.closed {
            self.flush(emit);
        }
    }

    fn joins(&self, frame: &[u8], f: &Flow) -> bool {
        let Some(first) = &self.first else {
            return false;
        };
        let run = &self.run[VNET_HDR_LEN..];
        !self.closed
            && f.ip == first.ip
            && f.hdrs == first.hdrs
            && f.seq == self.next_seq
            && f.payload <= self.mss
            && run.len() + f.payload <= first.ip + MAX_IP_LEN
            // Same addresses, ports and Ethernet header; same TTL, TOS, DF.
            && frame[..f.ip] == run[..first.ip]
            && frame[f.ip + 1] == run[first.ip + 1]
            && frame[f.ip + 6..f.ip + 9] == run[first.ip + 6..first.ip + 9]
            && frame[f.ip + 12..f.ip + 20] == run[first.ip + 12..first.ip + 20]
            && frame[f.tcp..f.tcp + 4] == run[first.tcp..first.tcp + 4]
            // Same ACK, window, options.
            && frame[f.tcp + 8..f.tcp + 12] == run[first.tcp + 8..first.tcp + 12]
            && frame[f.tcp + 14..f.tcp + 16] == run[first.tcp + 14..first.tcp + 16]
            && frame[f.tcp + 20..f.hdrs] == run[first.tcp + 20..first.hdrs]
    }

    fn alone(frame: &[u8], emit: &mut impl FnMut(Vec<u8>)) {
        let mut b = Vec::with_capacity(VNET_HDR_LEN + frame.len());
        b.extend_from_slice(&[0u8; VNET_HDR_LEN]);
        b.extend_from_slice(frame);
        emit(b);
    }

    /// Writes out the run being built, if any.
    pub fn flush(&mut self, emit: &mut impl FnMut(Vec<u8>)) {
        let Some(first) = self.first.take() else {
            return;
        };
        if self.count > 1 {
            let base = VNET_HDR_LEN;
            let (ip, tcp) = (base + first.ip, base + first.tcp);
            let total = self.run.len() - ip;
            let l4_len = self.run.len() - tcp;
            let r = &mut self.run;
            put16(r, ip + 2, total as u16);
            put16(r, ip + 10, 0);
            let c = !fold(sum(0, &r[ip..ip + 20]));
            put16(r, ip + 10, c);
            // The pseudo-header sum, for the kernel to finish.
            let p = sum(0, &r[ip + 12..ip + 20])
                .wrapping_add(u32::from(PROTO_TCP))
                .wrapping_add(l4_len as u32);
            put16(r, tcp + 16, fold(p));
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: first.hdrs as u16,
                gso_size: self.mss as u16,
                csum_start: first.tcp as u16,
                csum_offset: 16,
            };
            r[..VNET_HDR_LEN].copy_from_slice(&hdr.encode());
        }
        emit(std::mem::take(&mut self.run));
        self.count = 0;
        self.closed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame (timestamps option) with `payload`.
    fn tcp4(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 32];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        put16(&mut f, 12, ETHERTYPE_IPV4);
        f[14] = 0x45;
        put16(&mut f, 16, (20 + 32 + payload.len()) as u16);
        put16(&mut f, 18, 0x1234);
        put16(&mut f, 20, 0x4000);
        f[22] = 64;
        f[23] = PROTO_TCP;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        let t = 34;
        put16(&mut f, t, 40000);
        put16(&mut f, t + 2, 5201);
        f[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        f[t + 8..t + 12].copy_from_slice(&7u32.to_be_bytes());
        f[t + 12] = 8 << 4;
        f[t + 13] = flags;
        put16(&mut f, t + 14, 502);
        f[t + 20..t + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        f.extend_from_slice(payload);
        f
    }

    /// `f` with its IPv4 and TCP checksums as the wire carries them.
    fn wire(mut f: Vec<u8>) -> Vec<u8> {
        put16(&mut f, 24, 0);
        let c = !fold(sum(0, &f[14..34]));
        put16(&mut f, 24, c);
        put16(&mut f, 34 + 16, 0);
        let p = pseudo(&f, 14, false, PROTO_TCP, f.len() - 34).expect("pseudo");
        let c = !fold(sum(p, &f[34..]));
        put16(&mut f, 34 + 16, c);
        f
    }

    fn valid_ip(f: &[u8]) -> bool {
        fold(sum(0, &f[14..34])) == 0xffff
    }

    fn valid_l4(f: &[u8], proto: u8) -> bool {
        let l4_len = f.len() - 34;
        let p = pseudo(f, 14, false, proto, l4_len).expect("pseudo");
        fold(sum(p, &f[34..])) == 0xffff
    }

    /// [`segment`] into owned frames, appended to `out`.
    fn seg_all(read: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), OffloadError> {
        let mut f = Frames::default();
        segment(read, &mut f)?;
        out.extend(f.iter().map(<[u8]>::to_vec));
        Ok(())
    }

    fn read(hdr: VnetHdr, frame: &[u8]) -> Vec<u8> {
        let mut b = hdr.encode().to_vec();
        b.extend_from_slice(frame);
        b
    }

    #[test]
    fn a_tso_burst_is_cut_into_valid_segments_in_order() {
        let payload: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        let burst = tcp4(1000, TCP_ACK | TCP_PSH | TCP_CWR, &payload);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1398,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut out = Vec::new();
        seg_all(&read(hdr, &burst), &mut out).expect("segments");
        assert_eq!(out.len(), 3);
        let mut joined = Vec::new();
        for (i, f) in out.iter().enumerate() {
            assert!(valid_ip(f), "segment {i}: IP checksum");
            assert!(valid_l4(f, PROTO_TCP), "segment {i}: TCP checksum");
            let seq = be32(f, 38).expect("seq");
            assert_eq!(seq, 1000 + (i as u32) * 1398);
            assert_eq!(be16(f, 18).expect("id"), 0x1234 + i as u16);
            assert_eq!(usize::from(be16(f, 16).expect("len")) + 14, f.len());
            let flags = f[47];
            assert_eq!(flags & TCP_PSH != 0, i == 2, "PSH only on the last");
            assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR only on the first");
            joined.extend_from_slice(&f[66..]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn a_frame_without_gso_gets_its_checksum_filled() {
        let mut f = tcp4(5, TCP_ACK, b"hello");
        // As the kernel leaves it: the pseudo-header sum in the field.
        let p = pseudo(&f, 14, false, PROTO_TCP, f.len() - 34).expect("pseudo");
        put16(&mut f, 50, fold(p));
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let mut out = Vec::new();
        seg_all(&read(hdr, &f), &mut out).expect("one frame");
        assert_eq!(out.len(), 1);
        assert!(valid_l4(&out[0], PROTO_TCP));
    }

    #[test]
    fn a_udp_burst_is_cut_with_lengths_and_checksums() {
        let mut f = tcp4(0, 0, &[]);
        f.truncate(34);
        f[23] = PROTO_UDP;
        f.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0, 0, 0, 0]);
        f.extend((0..2500u32).map(|i| i as u8));
        let ip_len = (f.len() - 14) as u16;
        put16(&mut f, 16, ip_len);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 42,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 6,
        };
        let mut out = Vec::new();
        seg_all(&read(hdr, &f), &mut out).expect("segments");
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            [1042, 1042, 542]
        );
        for s in &out {
            assert!(valid_ip(s) && valid_l4(s, PROTO_UDP));
            assert_eq!(usize::from(be16(s, 38).expect("udp len")), s.len() - 34);
        }
    }

    #[test]
    fn malformed_reads_are_refused_not_guessed() {
        let mut out = Vec::new();
        assert_eq!(seg_all(&[0; 4], &mut out), Err(OffloadError::NoHeader));
        let tso = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            ..VnetHdr::default()
        };
        // Not IP; truncated; GSO size 0; an unknown GSO type.
        assert!(seg_all(&read(tso, &[0u8; 20]), &mut out).is_err());
        assert!(seg_all(&read(tso, &tcp4(1, TCP_ACK, b"x")[..40]), &mut out).is_err());
        let zero = VnetHdr { gso_size: 0, ..tso };
        assert!(seg_all(&read(zero, &tcp4(1, TCP_ACK, b"x")), &mut out).is_err());
        let odd = VnetHdr { gso_type: 3, ..tso };
        assert_eq!(
            seg_all(&read(odd, &tcp4(1, TCP_ACK, b"x")), &mut out),
            Err(OffloadError::GsoType(3))
        );
        let bad_csum = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 60,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        assert!(seg_all(&read(bad_csum, &tcp4(1, TCP_ACK, b"x")), &mut out).is_err());
        assert!(out.is_empty());
    }

    /// Cut and joined again: the same bytes as one frame, with a header
    /// that tells the kernel how to cut it.
    #[test]
    fn segments_of_a_flow_join_back_into_one_frame() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        let burst = tcp4(1, TCP_ACK | TCP_PSH, &payload);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1398,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut segs = Vec::new();
        seg_all(&read(hdr, &burst), &mut segs).expect("segments");
        let mut c = Coalescer::default();
        let mut written = Vec::new();
        for s in &segs {
            c.push(s, &mut |b| written.push(b));
        }
        c.flush(&mut |b| written.push(b));
        assert_eq!(written.len(), 1, "PSH on the last closes one run");
        let w = &written[0];
        let h = VnetHdr::decode(w).expect("header");
        assert_eq!(
            (h.gso_type, h.gso_size, h.csum_start, h.csum_offset),
            (GSO_TCPV4, 1398, 34, 16)
        );
        let f = &w[VNET_HDR_LEN..];
        assert_eq!(&f[66..], &payload[..]);
        assert!(valid_ip(f));
        assert_eq!(usize::from(be16(f, 16).expect("len")) + 14, f.len());
        // Cutting it as the kernel would gives the original segments back.
        let mut again = Vec::new();
        seg_all(w, &mut again).expect("segments");
        assert_eq!(again.len(), segs.len());
        for (a, b) in again.iter().zip(&segs) {
            assert_eq!(a[54..], b[54..], "payload and options");
            assert_eq!(a[38..42], b[38..42], "sequence numbers");
        }
    }

    #[test]
    fn only_in_order_segments_of_one_flow_join() {
        let mss = 100;
        let seg = |seq: u32| wire(tcp4(seq, TCP_ACK, &[7u8; 100]));
        let mut c = Coalescer::default();
        let mut w: Vec<Vec<u8>> = Vec::new();
        let mut emit = |b: Vec<u8>| w.push(b);
        c.push(&seg(0), &mut emit);
        c.push(&seg(100), &mut emit);
        // A gap: the run ends, a new one starts.
        c.push(&seg(300), &mut emit);
        // Another flow (port), a SYN, a short segment closing the run.
        let mut other = tcp4(400, TCP_ACK, &[7u8; 100]);
        put16(&mut other, 34, 40001);
        c.push(&wire(other), &mut emit);
        c.push(&wire(tcp4(0, 0x02, &[])), &mut emit);
        c.push(&seg(500), &mut emit);
        c.push(&wire(tcp4(600, TCP_ACK, &[1u8; 50])), &mut emit);
        c.push(&seg(650), &mut emit);
        c.flush(&mut emit);
        let sizes: Vec<(usize, u8)> = w
            .iter()
            .map(|b| (b.len() - VNET_HDR_LEN - 66, b[1]))
            .collect();
        assert_eq!(
            sizes,
            [
                (2 * mss, GSO_TCPV4),
                (mss, GSO_NONE),
                (mss, GSO_NONE),
                (0, GSO_NONE),
                (mss + 50, GSO_TCPV4),
                (mss, GSO_NONE),
            ]
        );
    }

    /// A segment damaged on the way is not vouched for: it passes alone with
    /// its bad checksum for the guest to drop, and ends the run before it.
    #[test]
    fn a_damaged_segment_never_joins() {
        let seg = |seq: u32| wire(tcp4(seq, TCP_ACK, &[7u8; 100]));
        let mut bad = seg(200);
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let mut bad_ip = seg(300);
        bad_ip[22] = 1; // TTL changed, IP checksum not
        let mut c = Coalescer::default();
        let mut w: Vec<Vec<u8>> = Vec::new();
        let mut emit = |b: Vec<u8>| w.push(b);
        for f in [
            seg(0),
            seg(100),
            bad.clone(),
            bad_ip.clone(),
            seg(400),
            seg(500),
        ] {
            c.push(&f, &mut emit);
        }
        c.flush(&mut emit);
        let got: Vec<(usize, u8)> = w
            .iter()
            .map(|b| (b.len() - VNET_HDR_LEN - 66, b[1]))
            .collect();
        assert_eq!(
            got,
            [
                (200, GSO_TCPV4),
                (100, GSO_NONE),
                (100, GSO_NONE),
                (200, GSO_TCPV4)
            ]
        );
        assert_eq!(w[1][VNET_HDR_LEN..], bad[..], "passed on as it came");
        assert_eq!(w[2][VNET_HDR_LEN..], bad_ip[..], "passed on as it came");
        assert_eq!(w[1][0], 0, "no NEEDS_CSUM: the guest checks it");
    }

    /// The 64-bit sum is the RFC 1071 16-bit sum, at any length and offset.
    #[test]
    fn the_wide_sum_is_the_internet_checksum() {
        let data: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let narrow = |d: &[u8]| {
            let mut acc: u64 = 0;
            for c in d.chunks(2) {
                acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            while acc > 0xffff {
                acc = (acc & 0xffff) + (acc >> 16);
            }
            acc as u16
        };
        for start in 0..9 {
            for len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 1400, 1401, 2991 - start] {
                let d = &data[start..start + len];
                assert_eq!(fold(sum(0, d)), narrow(d), "start {start} len {len}");
            }
        }
        assert_eq!(fold(sum(0, &[0xff; 64])), 0xffff);
    }
}
