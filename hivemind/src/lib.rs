//! Hivemind: a container orchestrator whose networking runs in the Linux kernel.
//!
//! See `ARCHITECTURE.md` at the repository root for the code map.

pub mod acl;
pub mod api;
pub mod checks;
pub mod cicd;
pub mod cli;
pub mod cloud;
pub mod cluster;
pub mod command;
pub mod containerd;
pub mod contract;
pub mod dataplane;
pub mod discovery;
pub mod health;
pub mod helm;
pub mod image;
pub mod ingress;
pub mod kube;
pub mod listener;
pub mod logfile;
pub mod metrics;
pub mod model;
pub mod network;
pub mod node;
pub mod pki;
pub mod policy;
pub mod rollout;
pub mod runtime;
pub mod scheduler;
pub mod secrets;
pub mod serve;
pub mod services;
pub mod shipping;
pub mod state;
pub mod telemetry;
pub mod validation;
pub mod vuln;
