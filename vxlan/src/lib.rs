//! VXLAN (RFC 7348) for the overlay networks: the 8-byte header and its VNI, the outer
//! Ethernet/IPv4/UDP headers of a tunnelled frame, the outer UDP source port hashed from the
//! inner flow (so the underlay spreads flows, as the kernel's vxlan device does), and the
//! VTEP table (which remote MAC is behind which tunnel endpoint). Pure functions over
//! buffers, no I/O: the data plane decides where bytes go.
//!
//! ```text
//!  outer Ethernet (14) | outer IPv4 (20) | UDP (8, dst 4789) | VXLAN (8: flags I, VNI) | inner frame
//!  \_______________________________ OVERHEAD = 50 bytes _______________________________/
//! ```

pub mod flow;
pub mod header;
pub mod outer;
pub mod vtep;

pub use flow::source_port;
pub use header::{Error, Vni, HEADER_LEN};
pub use outer::{decap, Decapped, Outer, OVERHEAD};
pub use vtep::{Learned, VtepTable};

/// IANA's VXLAN port (the kernel's `dstport 4789`).
pub const PORT: u16 = 4789;
