//! The CNI plugin binary: see `vswitch::cni`.
fn main() {
    std::process::exit(vswitch::cni::main(vswitch::protocol::DEFAULT_SOCKET));
}
