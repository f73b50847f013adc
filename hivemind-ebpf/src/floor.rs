//! The benchmarks' floor, an object of its own so that the daemon's never carries it: the empty
//! TC and XDP programs the per-packet figures are measured against, and the empty TC program
//! with the trace monitor's switch (what the monitor costs every packet while it is off).
//! Loaded by `Dataplane::load_floor_programs`, for benches and tests only.
#![no_std]
#![no_main]

mod runtime;
mod switch;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

/// Empty XDP program: the floor for the XDP per-packet cost benchmarks.
#[xdp]
pub fn hm_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Empty TC program: the floor for the TC per-packet cost benchmarks.
#[classifier]
pub fn hm_tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// The empty TC program plus the switch the container programs check before tracing (one
/// array load and a branch); against `hm_tc_pass`, what the monitor costs while it is off.
#[classifier]
pub fn hm_tc_monitor_switch(_ctx: TcContext) -> i32 {
    if switch::on() {
        TC_ACT_UNSPEC
    } else {
        TC_ACT_OK
    }
}
