//! Every change a user can ask of a node, as one closed enum. The REST
//! handlers (and so the CLI and the dashboard) only parse into a [`Command`];
//! [`crate::daemon::Node::execute`] is the one place that carries them out.

use crate::model::AppSpec;

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Creates the app, or replaces its containers with the new spec.
    Deploy(Box<AppSpec>),
    Scale {
        name: String,
        replicas: u32,
    },
    /// Replaces every container of the app; volumes keep their data.
    Restart {
        name: String,
    },
    DeleteApp {
        name: String,
    },
    CreateVolume {
        name: String,
    },
    DeleteVolume {
        name: String,
    },
    /// Creates or replaces a network policy.
    PutPolicy(Box<crate::policy::NetworkPolicy>),
    DeletePolicy {
        name: String,
    },
}

/// What a command did, for the API's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Deployed {
        app: String,
        containers: Vec<String>,
        created: bool,
    },
    Scaled {
        app: String,
        replicas: u32,
    },
    Restarted {
        app: String,
        containers: Vec<String>,
    },
    Deleted {
        kind: &'static str,
        name: String,
    },
    VolumeCreated {
        name: String,
        path: String,
    },
    PolicySet {
        name: String,
    },
}
