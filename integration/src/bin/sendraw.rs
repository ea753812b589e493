//! sendraw IFACE DST SRC ETHERTYPE COUNT SIZE [PAYLOAD-HEX]: send COUNT raw Ethernet frames
//! of SIZE bytes (payload, then zeros) out of IFACE. For tests that need exact frames (MAC moves, link-local
//! destinations, counted floods).

use std::process::exit;

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|p| u8::from_str_radix(p, 16).expect("mac byte")).collect();
    v.try_into().expect("six bytes")
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 && a.len() != 8 {
        eprintln!("usage: sendraw IFACE DST SRC ETHERTYPE(hex) COUNT SIZE [PAYLOAD-HEX]");
        exit(2);
    }
    // SAFETY: a valid C string for the call.
    let ifindex = unsafe { libc::if_nametoindex(std::ffi::CString::new(a[1].as_str()).unwrap().as_ptr()) };
    if ifindex == 0 {
        eprintln!("no interface {}", a[1]);
        exit(1);
    }
    let ethertype = u16::from_str_radix(a[4].trim_start_matches("0x"), 16).expect("ethertype");
    let count: u32 = a[5].parse().expect("count");
    let size: usize = a[6].parse().expect("size");
    let mut f = Vec::with_capacity(size.max(14));
    f.extend_from_slice(&mac(&a[2]));
    f.extend_from_slice(&mac(&a[3]));
    f.extend_from_slice(&ethertype.to_be_bytes());
    if let Some(hex) = a.get(7) {
        for i in (0..hex.len()).step_by(2) {
            f.push(u8::from_str_radix(&hex[i..i + 2], 16).expect("payload hex"));
        }
    }
    f.resize(size.max(14), 0);
    // SAFETY: no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        eprintln!("socket: {}", std::io::Error::last_os_error());
        exit(1);
    }
    // SAFETY: sockaddr_ll is plain old data; all zeros is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
    for _ in 0..count {
        let addr = &sll as *const libc::sockaddr_ll as *const libc::sockaddr;
        // SAFETY: `f` and `addr` are live for the call.
        let r = unsafe { libc::sendto(fd, f.as_ptr() as *const libc::c_void, f.len(), 0, addr, len) };
        if r < 0 {
            eprintln!("sendto: {}", std::io::Error::last_os_error());
            exit(1);
        }
    }
}
