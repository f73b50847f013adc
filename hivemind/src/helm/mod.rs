//! Helm charts (the reference guide's `hivemind helm ...`). What exists so far is the template
//! engine charts are rendered with ([`template`]: Go's `text/template` with the Sprig and Helm
//! functions charts use); charts, repositories, the mapping of the rendered Kubernetes objects
//! onto apps, and releases are not built yet (docs/status.md).

pub mod template;
