//! Host-side face of the eBPF crate: empty, so that cargo tracks it as a build dependency of
//! enforcer (whose build.rs compiles the real programs in main.rs for the BPF target).
#![no_std]
