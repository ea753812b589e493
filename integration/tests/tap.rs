//! `--tap` on TAP devices made by others: an existing single-queue device (as `ip tuntap` and
//! QEMU make them) is attached; a TAP another process holds a queue of (QEMU's) is refused
//! with the way out (attach it as an interface), which then works; a process that changes the
//! device's vnet header size under the switch makes the port fail instead of misreading frames.

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vswitch_integration::*;

/// A process holding a queue of TAP `name` (multi-queue, vnet header), as QEMU with
/// `queues=2,mq=on` would; with `hdr12`, it sets the device's vnet header size to 12 as QEMU
/// does. Killed on drop.
struct Holder(Child);

impl Holder {
    fn start(name: &str, multi_queue: bool, hdr12: bool) -> Holder {
        let flags = 0x0002 | 0x1000 | 0x4000 | if multi_queue { 0x0100 } else { 0 }; // TAP NO_PI VNET_HDR [MULTI_QUEUE]
        let script = format!(
            "import fcntl, os, struct, sys, time\n\
             fd = os.open('/dev/net/tun', os.O_RDWR)\n\
             fcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', b'{name}', {flags}))\n\
             if {hdr12}: fcntl.ioctl(fd, 0x400454d8, struct.pack('i', 12))\n\
             print('ready', flush=True)\n\
             time.sleep(120)\n",
            hdr12 = if hdr12 { "True" } else { "False" },
        );
        let mut child = Command::new("python3").args(["-c", &script]).stdout(Stdio::piped()).spawn().expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the holder could not open {name}");
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TAP device made here (removed on drop).
struct Tap(String);

impl Tap {
    fn new(extra: &[&str]) -> Tap {
        let name = unique("vtp");
        let mut a = vec!["ip", "tuntap", "add", "mode", "tap", "name", &name];
        a.extend_from_slice(extra);
        sh(&a);
        Tap(name)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[test]
fn an_existing_single_queue_tap_is_attached_and_forwards() {
    let d = Daemon::start(2);
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.77.1.0/24"]);
    let a = Host::new("10.77.1.10");
    d.ok(&["network", "connect", &net, &a.veth.host]);
    let tap = Tap::new(&["vnet_hdr"]); // single queue, idle
    d.ok(&["network", "connect", &net, "--tap", &tap.0]);
    let vm = Netns::new();
    sh(&["ip", "link", "set", &tap.0, "netns", &vm.name]);
    vm.run(&["ip", "addr", "add", "10.77.1.2/24", "dev", &tap.0]);
    vm.run(&["ip", "link", "set", &tap.0, "up"]);
    assert!(a.ns.wait_ping("10.77.1.2", 5), "no ping to the TAP's namespace:\n{}", d.log());
    let (gbps, _) = iperf(&vm, &a.ns, "10.77.1.10", 2);
    assert!(gbps > 0.3, "TCP from the single-queue TAP at {gbps:.2} Gbit/s");
    // The device goes back to the root namespace before the guard deletes it.
    let _ = vm.output(&["ip", "link", "set", &tap.0, "netns", "1"]);
}

#[test]
fn a_tap_another_process_holds_is_refused_with_the_way_out() {
    let d = Daemon::start(2);
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.77.2.0/24"]);
    for multi_queue in [true, false] {
        let tap = Tap::new(if multi_queue { &["vnet_hdr", "multi_queue"] } else { &["vnet_hdr"] });
        let holder = Holder::start(&tap.0, multi_queue, true);
        let err = d.fails(&["network", "connect", &net, "--tap", &tap.0]);
        assert!(err.contains("held by another process") && err.contains("python3"), "{err}");
        assert!(err.contains(&format!("vswitch network connect NETWORK {}", tap.0)), "{err}");
        assert!(d.json(&["network", "inspect", &net])[0]["endpoints"].as_array().unwrap().is_empty());
        // The way out works: the TAP as an interface.
        sh(&["ip", "link", "set", &tap.0, "up"]);
        d.ok(&["network", "connect", &net, &tap.0]);
        d.ok(&["network", "disconnect", &net, &tap.0]);
        drop(holder);
    }
}

#[test]
fn a_vnet_header_changed_under_the_switch_fails_the_port_instead_of_misreading() {
    let d = Daemon::start(1);
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.77.3.0/24"]);
    let a = Host::new("10.77.3.10");
    d.ok(&["network", "connect", &net, &a.veth.host]);
    let tap = Tap::new(&["vnet_hdr", "multi_queue"]);
    d.ok(&["network", "connect", &net, "--tap", &tap.0]);
    sh(&["ip", "addr", "add", "10.77.3.2/24", "dev", &tap.0]);
    sh(&["ip", "link", "set", &tap.0, "up"]);
    // Someone (QEMU) joins the device and sets its header size to 12.
    let _holder = Holder::start(&tap.0, true, true);
    let before = d.tx_packets(&a.veth.host);
    // Frames from the TAP's kernel side over many flows: the kernel spreads them over the
    // device's two queues by flow hash, so some land on the switch's. (Not ping: all of its
    // packets are one flow, and its ARP requests too; the neighbour is set by hand so that
    // no ARP has to find its way.)
    sh(&["ip", "neigh", "replace", "10.77.3.10", "lladdr", &a.mac(), "dev", &tap.0]);
    let flows = "import socket\n\
                 for _ in range(64):\n    \
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
                 s.sendto(b'x' * 32, ('10.77.3.10', 9))\n    \
                 s.close()\n";
    for _ in 0..20 {
        let _ = Command::new("python3").args(["-c", flows]).output();
        if d.log().contains("vnet header size became") {
            break;
        }
    }
    assert!(
        eventually(10, || d.log().contains("vnet header size became Some(12)")),
        "the port did not fail:\n{}",
        d.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(d.tx_packets(&a.veth.host) <= before + 1, "frames read with the wrong header were forwarded");
}
