//! The QEMU guest image, built on this machine from Debian packages only:
//! the distribution kernel (`linux-image-amd64`) booted directly with
//! `-kernel`, and an initramfs holding `busybox-static`, the virtio-net
//! driver chain from that kernel's modules and an `/init` that brings the
//! guest up.
//!
//! * The kernel is handed to QEMU uncompressed (`vmlinux`, found in the
//!   bzImage by its XZ stream as the kernel tree's `extract-vmlinux` does and
//!   unpacked with `xz`): TCG spends seconds decompressing it otherwise.
//! * `/init` mounts the pseudo file systems, loads `virtio_ring, virtio,
//!   virtio_pci_modern_dev, virtio_pci_legacy_dev, virtio_pci, failover,
//!   net_failover, virtio_net` in that order, takes its address by DHCP
//!   (`udhcpc`, which keeps renewing), serves `/www` over HTTP (busybox
//!   `httpd` on port 80, with a 16 MiB `/www/blob` of random bytes for TCP
//!   checks) and runs the control loop of [`super::console`] on the serial
//!   console, which works whatever state the network is in.
//!
//! The image is cached under a directory named by a SHA-256 of every input
//! (kernel, modules, busybox, the scripts, this builder's format), so a new
//! kernel or busybox rebuilds it and an unchanged machine reuses it. A build
//! writes into a scratch directory and renames it into place: a crash never
//! leaves a half image that looks whole.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// Bump when what the builder writes changes.
const FORMAT: &str = "switchyard-guest-image/1";

/// The virtio-net driver chain, in load order.
pub const MODULES: [&str; 8] = [
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
];

/// The Debian packages the image is made from (and `xz` to unpack the kernel).
pub const PACKAGES: &str = "linux-image-amd64 busybox-static xz-utils";

const INIT: &str = r#"#!/bin/busybox sh
# switchyard guest: bring up, then serve the console control loop forever.
/bin/busybox mkdir -p /usr/bin /usr/sbin /sbin /proc /sys /dev /tmp /run /www
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo 1 > /proc/sys/kernel/printk
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
  insmod /lib/modules/$m.ko || echo "switchyard-guest: insmod $m failed"
done
ip link set lo up
hostname "$(sed -n 's/.*sy.name=\([^ ]*\).*/\1/p' /proc/cmdline)"
for i in $(seq 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done
ip link set eth0 up
# In the foreground of its own job: it asks again every second until it has
# a lease, then keeps renewing (-b would first block for every retry).
udhcpc -f -i eth0 -s /etc/udhcpc.script -t 3 -T 1 -A 1 -S >/dev/null 2>&1 &
(dd if=/dev/urandom of=/tmp/blob bs=1M count=16 2>/dev/null && mv /tmp/blob /www/blob; httpd -p 80 -h /www) &
exec </dev/ttyS0 >/dev/ttyS0 2>&1
stty -echo
echo "switchyard-guest: ready"
while :; do
  IFS= read -r line || { sleep 0.1; continue; }
  case "$line" in
    "@@SY "*)
      rest=${line#@@SY }
      id=${rest%% *}
      cmd=${rest#* }
      out=$(sh -c "$cmd" 2>&1 </dev/null)
      rc=$?
      printf '@@SY-OUT %s\n' "$id"
      [ -n "$out" ] && printf '%s\n' "$out"
      printf '@@SY-END %s %d\n' "$id" "$rc"
      ;;
  esac
done
"#;

const UDHCPC: &str = r#"#!/bin/sh
# udhcpc's hook: the lease's address, default route and MTU on the NIC.
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    if ! ip -4 addr show dev "$interface" | grep -q " $ip/"; then
      ip addr flush dev "$interface"
      ip addr add "$ip/${mask:-24}" dev "$interface"
    fi
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    if [ -n "$router" ]; then
      ip route del default 2>/dev/null
      for r in $router; do ip route add default via "$r" dev "$interface"; break; done
    fi
    echo "$ip" > /run/lease
    ;;
esac
exit 0
"#;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "no kernel with the virtio-net modules under /boot and /lib/modules (Debian packages: {PACKAGES})"
    )]
    NoKernel,
    #[error("{0} is not a static busybox (Debian package busybox-static)")]
    NoBusybox(String),
    #[error("no XZ-compressed kernel found inside {0}")]
    NotUnpacked(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.to_string();
    move |e| ImageError::Io(what, e)
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The uncompressed kernel for `-kernel`.
    pub kernel: PathBuf,
    /// The initramfs for `-initrd`.
    pub initrd: PathBuf,
    /// The kernel release it was built from.
    pub release: String,
}

/// Where the inputs are (the machine's own files by default).
#[derive(Debug, Clone)]
pub struct Inputs {
    pub boot: PathBuf,
    pub modules: PathBuf,
    pub busybox: PathBuf,
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs {
            boot: "/boot".into(),
            modules: "/lib/modules".into(),
            busybox: "/bin/busybox".into(),
        }
    }
}

/// The newest kernel release that has a bzImage and every module.
fn kernel_release(inp: &Inputs) -> Result<String, ImageError> {
    let mut found: Vec<String> = std::fs::read_dir(&inp.boot)
        .map_err(|_| ImageError::NoKernel)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .filter(|r| {
            MODULES
                .iter()
                .all(|m| inp.modules.join(r).join(m).is_file())
        })
        .collect();
    found.sort_by_key(|r| natural(r));
    found.pop().ok_or(ImageError::NoKernel)
}

/// "6.1.0-57-amd64" → [6, 1, 0, 57]: releases compare by their numbers.
fn natural(r: &str) -> Vec<u64> {
    r.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn read(p: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(p).map_err(io(p.display()))
}

/// A dynamically linked binary names its loader in `PT_INTERP`, near the
/// start of the file.
fn is_static(elf: &[u8]) -> bool {
    let head = &elf[..elf.len().min(64 << 10)];
    elf.starts_with(b"\x7fELF") && !head.windows(8).any(|w| w == b"ld-linux")
}

/// Builds the image into `cache` unless one from the same inputs is there.
pub fn ensure(cache: &Path, inp: &Inputs) -> Result<Image, ImageError> {
    let release = kernel_release(inp)?;
    let bz = inp.boot.join(format!("vmlinuz-{release}"));
    let bzimage = read(&bz)?;
    let busybox = read(&inp.busybox)?;
    if !is_static(&busybox) {
        return Err(ImageError::NoBusybox(inp.busybox.display().to_string()));
    }
    let mut modules = Vec::new();
    for m in MODULES {
        modules.push(read(&inp.modules.join(&release).join(m))?);
    }
    let mut h = Sha256::new();
    for part in [
        FORMAT.as_bytes(),
        INIT.as_bytes(),
        UDHCPC.as_bytes(),
        &bzimage,
        &busybox,
    ]
    .into_iter()
    .chain(modules.iter().map(Vec::as_slice))
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let key: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache.join(format!("guest-{release}-{key}"));
    let image = Image {
        kernel: dir.join("vmlinux"),
        initrd: dir.join("initrd.cpio"),
        release: release.clone(),
    };
    if dir.join("complete").is_file() {
        return Ok(image);
    }
    std::fs::create_dir_all(cache).map_err(io(cache.display()))?;
    let scratch = cache.join(format!(".build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(io(scratch.display()))?;
    let built = (|| {
        unpack_kernel(&bzimage, &bz, &scratch.join("vmlinux"))?;
        let f = std::fs::File::create(scratch.join("initrd.cpio")).map_err(io("initrd.cpio"))?;
        let mut w = std::io::BufWriter::new(f);
        initramfs(&mut w, &busybox, &modules).map_err(io("initrd.cpio"))?;
        w.flush().map_err(io("initrd.cpio"))?;
        std::fs::write(scratch.join("complete"), FORMAT).map_err(io("complete"))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&scratch, &dir).map_err(io(dir.display()))
    })();
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    built.map(|()| image)
}

/// Finds the XZ stream in the bzImage and unpacks it to `out` (an ELF).
fn unpack_kernel(bzimage: &[u8], from: &Path, out: &Path) -> Result<(), ImageError> {
    const XZ_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
    for at in bzimage
        .windows(XZ_MAGIC.len())
        .enumerate()
        .filter(|(_, w)| *w == XZ_MAGIC)
        .map(|(i, _)| i)
    {
        let f = std::fs::File::create(out).map_err(io(out.display()))?;
        let mut child = Command::new("xz")
            .args(["-dc", "--single-stream"])
            .stdin(Stdio::piped())
            .stdout(f)
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("xz (Debian package xz-utils)"))?;
        if let Some(mut stdin) = child.stdin.take() {
            // xz stops reading at the stream's end: a broken pipe after it is fine.
            let _ = stdin.write_all(&bzimage[at..]);
        }
        let ok = child.wait().map(|s| s.success()).unwrap_or(false);
        let mut head = [0u8; 4];
        let elf = std::fs::File::open(out)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .is_ok()
            && head == *b"\x7fELF";
        if ok && elf {
            return Ok(());
        }
    }
    Err(ImageError::NotUnpacked(from.display().to_string()))
}

/// The initramfs as a newc cpio archive.
fn initramfs(w: &mut impl Write, busybox: &[u8], modules: &[Vec<u8>]) -> std::io::Result<()> {
    use cpio::newc::{Builder, ModeFileType};
    let mut ino = 1u32;
    let mut entry =
        |w: &mut dyn Write, name: &str, mode: u32, data: &[u8], rdev: Option<(u32, u32)>| {
            let mut b = Builder::new(name).ino(ino).mode(mode).nlink(1);
            ino += 1;
            if let Some((major, minor)) = rdev {
                b = b.rdev_major(major).rdev_minor(minor);
            }
            let size = u32::try_from(data.len())
                .map_err(|_| std::io::Error::other(format!("{name} is too large for cpio")))?;
            let mut f = b.write(w, size);
            f.write_all(data)?;
            f.finish().map(|_| ())
        };
    let dir = u32::from(ModeFileType::Directory) | 0o755;
    for d in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "tmp",
        "run",
        "www",
    ] {
        entry(w, d, dir, &[], None)?;
    }
    // The kernel opens /dev/console for init before devtmpfs is mounted.
    entry(
        w,
        "dev/console",
        u32::from(ModeFileType::Char) | 0o600,
        &[],
        Some((5, 1)),
    )?;
    let exe = u32::from(ModeFileType::Regular) | 0o755;
    entry(w, "init", exe, INIT.as_bytes(), None)?;
    entry(w, "bin/busybox", exe, busybox, None)?;
    entry(w, "etc/udhcpc.script", exe, UDHCPC.as_bytes(), None)?;
    for (path, data) in MODULES.iter().zip(modules) {
        let name = path.rsplit('/').next().unwrap_or(path);
        entry(
            w,
            &format!("lib/modules/{name}"),
            u32::from(ModeFileType::Regular) | 0o644,
            data,
            None,
        )?;
    }
    cpio::newc::trailer(w).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_compare_by_number() {
        let mut r = [
            "6.1.0-9-amd64",
            "6.1.0-57-amd64",
            "5.10.0-30-amd64",
            "6.12.1-1-amd64",
        ];
        r.sort_by_key(|x| natural(x));
        assert_eq!(r.last(), Some(&"6.12.1-1-amd64"));
        assert_eq!(r[1], "6.1.0-9-amd64");
    }

    #[test]
    fn the_archive_holds_init_busybox_modules_and_a_console_node() {
        let mut out = Vec::new();
        let mods: Vec<Vec<u8>> = MODULES.iter().map(|m| m.as_bytes().to_vec()).collect();
        initramfs(&mut out, b"\x7fELFbusybox", &mods).expect("archive");
        let mut names = Vec::new();
        let mut rest = &out[..];
        loop {
            let r = cpio::NewcReader::new(rest).expect("entry");
            let e = r.entry();
            if e.is_trailer() {
                break;
            }
            names.push((
                e.name().to_string(),
                e.mode(),
                e.rdev_major(),
                e.file_size(),
            ));
            rest = r.finish().expect("next");
        }
        let find = |n: &str| names.iter().find(|x| x.0 == n).cloned().expect(n);
        assert_eq!(find("init").1, 0o100755);
        assert_eq!(find("init").3 as usize, INIT.len());
        assert_eq!(find("bin/busybox").3, 11);
        assert_eq!(
            (find("dev/console").1, find("dev/console").2),
            (0o020600, 5)
        );
        assert!(names.iter().any(|n| n.0 == "lib/modules/virtio_net.ko"));
        assert_eq!(
            names
                .iter()
                .filter(|n| n.0.starts_with("lib/modules/"))
                .count(),
            MODULES.len()
        );
    }

    #[test]
    fn only_a_static_busybox_will_do() {
        assert!(is_static(b"\x7fELF\x02\x01\x01static"));
        assert!(!is_static(b"\x7fELF\x02/lib64/ld-linux-x86-64.so.2"));
        assert!(!is_static(b"#!/bin/sh"));
    }
}
