//! Link captures as classic pcap files (Ethernet link type), readable by
//! tshark and Wireshark. Timestamps are the lab's virtual time.

use std::path::Path;

use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use smoltcp::time::Instant;

/// Frames seen on one link, in order.
#[derive(Debug, Default, Clone)]
pub struct Capture {
    pub frames: Vec<(Instant, Vec<u8>)>,
}

impl Capture {
    pub fn record(&mut self, at: Instant, frame: &[u8]) {
        self.frames.push((at, frame.to_vec()));
    }

    /// Writes the capture to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let file = std::fs::File::create(path)?;
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(file, header).map_err(std::io::Error::other)?;
        for (at, data) in &self.frames {
            let micros = u64::try_from(at.total_micros()).unwrap_or(0);
            let ts = std::time::Duration::from_micros(micros);
            let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
            w.write_packet(&PcapPacket::new(ts, len, data))
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}
