//! The control plane: what the user asks for, checked, saved and published to the data
//! plane. `controller` runs the commands; `state` (with `migrate`) is what persists; `ipam`
//! hands out addresses; `system` is the machine as the controller sees it, with `netlink`
//! and `netns` doing the work.

pub mod controller;
pub mod error;
pub mod ipam;
pub mod migrate;
pub mod netlink;
pub mod netns;
pub mod state;
pub mod system;

pub use controller::Controller;
pub use error::{Error, Result};
