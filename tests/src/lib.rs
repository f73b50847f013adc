//! Support for the end-to-end tests: namespaces, a real containerd, a real
//! registry, an image built offline, and a daemon under test.
#![allow(clippy::unwrap_used)]

pub mod browser;
pub mod collector;
pub mod containerd;
pub mod daemon;
pub mod git;
pub mod image;
pub mod kernel;
pub mod load;
pub mod moto;
pub mod netns;
pub mod registry;
pub mod testbed;
