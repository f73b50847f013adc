//! Rendering a chart as `helm template` does: values coalesced over the chart's defaults (and
//! each subchart's under its name, with `global` shared), every template with `.Values`,
//! `.Release`, `.Chart`, `.Capabilities`, `.Template` and `.Files`, the output split into
//! Kubernetes objects. Hooks (`helm.sh/hook`) are left out: Hivemind runs no Jobs for them.

use serde_json::{Map, Value, json};

use super::chart::Chart;
use super::template::{Templates, truthy};
use super::values::coalesce;

/// The Kubernetes version charts are told they run on (`.Capabilities.KubeVersion`).
pub const KUBE_VERSION: &str = "v1.31.0";

/// The API groups whose kinds Hivemind maps (`.Capabilities.APIVersions.Has`).
const API_VERSIONS: &[&str] = &[
    "v1",
    "apps/v1",
    "networking.k8s.io/v1",
    "autoscaling/v2",
    "policy/v1",
    "batch/v1",
];

/// Who a render is for (`.Release`).
#[derive(Debug, Clone)]
pub struct ReleaseInfo {
    pub name: String,
    pub namespace: String,
    pub revision: u64,
    pub is_upgrade: bool,
}

/// One rendered object.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The template it came from (`web/templates/deployment.yaml`).
    pub template: String,
    pub kind: String,
    pub name: String,
    pub object: Value,
}

/// What a chart renders to.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub manifests: Vec<Manifest>,
    /// Hooks left out, as `Kind/name`.
    pub hooks: Vec<String>,
    /// `templates/NOTES.txt` of the top chart, rendered.
    pub notes: String,
    /// The values the top chart rendered with (defaults coalesced with the user's).
    pub values: Value,
}

/// A chart the renderer could not turn into objects.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// One chart of the tree, ready to render: its template prefix and the values it sees.
struct Part<'a> {
    chart: &'a Chart,
    prefix: String,
    values: Value,
}

/// The chart and its enabled subcharts, each with its values.
fn parts<'a>(chart: &'a Chart, prefix: String, values: Value, out: &mut Vec<Part<'a>>) {
    let global = values.get("global").cloned().unwrap_or_else(|| json!({}));
    for sub in &chart.subcharts {
        let dependency = chart
            .metadata
            .dependencies
            .iter()
            .find(|d| d.name == sub.metadata.name);
        let key = dependency
            .and_then(|d| d.alias.clone())
            .unwrap_or_else(|| sub.metadata.name.clone());
        if let Some(condition) = dependency.and_then(|d| d.condition.as_deref()) {
            let setting = condition
                .split(',')
                .map(|path| lookup(&values, path.trim()))
                .find(|v| !v.is_null());
            if setting.is_some_and(|v| !truthy(&v)) {
                continue;
            }
        }
        let mut sub_values = coalesce(
            &sub.values,
            values.get(&key).unwrap_or(&Value::Object(Map::new())),
        );
        let sub_global = sub_values
            .get("global")
            .cloned()
            .unwrap_or_else(|| json!({}));
        sub_values["global"] = coalesce(&sub_global, &global);
        parts(sub, format!("{prefix}/charts/{key}"), sub_values, out);
    }
    out.push(Part {
        chart,
        prefix,
        values,
    });
}

/// `a.b.c` in a values tree.
fn lookup(values: &Value, path: &str) -> Value {
    path.split('.')
        .try_fold(values, |v, key| v.get(key))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Renders `chart` for `release` with the user's `values` over the chart's defaults.
pub fn render(
    chart: &Chart,
    release: &ReleaseInfo,
    values: &Value,
) -> Result<Rendered, RenderError> {
    let top_values = coalesce(&chart.values, values);
    let mut all = Vec::new();
    parts(
        chart,
        chart.metadata.name.clone(),
        top_values.clone(),
        &mut all,
    );

    let mut templates = Templates::new();
    for part in &all {
        for (path, source) in &part.chart.templates {
            let name = format!("{}/{path}", part.prefix);
            templates
                .add(&name, source)
                .map_err(|e| RenderError(format!("parse error at {e}")))?;
        }
    }

    let capabilities = json!({
        "KubeVersion": {
            "Version": KUBE_VERSION,
            "GitVersion": KUBE_VERSION,
            "Major": "1",
            "Minor": "31",
        },
        "APIVersions": API_VERSIONS,
        "HelmVersion": {"Version": "v3.16.0"},
    });
    let release_value = json!({
        "Name": release.name,
        "Namespace": release.namespace,
        "Revision": release.revision,
        "IsInstall": !release.is_upgrade,
        "IsUpgrade": release.is_upgrade,
        "Service": "Helm",
    });

    let mut rendered = Rendered {
        values: top_values,
        ..Default::default()
    };
    for (index, part) in all.iter().enumerate() {
        let is_top = index + 1 == all.len();
        if part.chart.metadata.is_library() {
            continue;
        }
        let files: Map<String, Value> = part
            .chart
            .files
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        for path in part.chart.templates.keys() {
            let base = path.rsplit('/').next().unwrap_or(path);
            let notes = path == "templates/NOTES.txt";
            if base.starts_with('_') || (notes && !is_top) {
                continue;
            }
            let name = format!("{}/{path}", part.prefix);
            let data = json!({
                "Values": part.values,
                "Release": release_value,
                "Chart": Value::Object(part.chart.chart_fields.clone()),
                "Capabilities": capabilities,
                "Template": {"Name": name, "BasePath": format!("{}/templates", part.prefix)},
                "Files": Value::Object(files.clone()),
            });
            let text = templates
                .render(&name, &data)
                .map_err(|e| RenderError(format!("render error at {e}")))?;
            if notes {
                rendered.notes = text;
                continue;
            }
            if !(base.ends_with(".yaml") || base.ends_with(".yml") || base.ends_with(".json")) {
                continue;
            }
            split_objects(&name, &text, &mut rendered)?;
        }
    }
    Ok(rendered)
}

/// Splits a template's output at `---` lines into objects, leaving out empty documents and
/// hooks.
fn split_objects(template: &str, text: &str, out: &mut Rendered) -> Result<(), RenderError> {
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            documents.push(String::new());
        } else {
            let current = documents.last_mut().expect("never empty");
            current.push_str(line);
            current.push('\n');
        }
    }
    for document in documents {
        let object: Value = serde_yaml::from_str(&document).map_err(|e| {
            RenderError(format!(
                "{template} does not render to valid YAML: {e}\n{}",
                numbered(&document)
            ))
        })?;
        if object.is_null() {
            continue;
        }
        let Value::Object(map) = &object else {
            return Err(RenderError(format!(
                "{template} renders a document that is not an object"
            )));
        };
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind.is_empty() || name.is_empty() {
            return Err(RenderError(format!(
                "{template} renders an object without kind or metadata.name"
            )));
        }
        let hook = map
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get("helm.sh/hook"));
        if hook.is_some() {
            out.hooks.push(format!("{kind}/{name}"));
            continue;
        }
        out.manifests.push(Manifest {
            template: template.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            object: object.clone(),
        });
    }
    Ok(())
}

fn numbered(text: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| format!("{:>4}: {l}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn chart(list: &[(&str, &str)]) -> Chart {
        let files: BTreeMap<String, Vec<u8>> = list
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        Chart::from_files(files).unwrap()
    }

    fn release() -> ReleaseInfo {
        ReleaseInfo {
            name: "prod".into(),
            namespace: "default".into(),
            revision: 1,
            is_upgrade: false,
        }
    }

    #[test]
    fn objects_hooks_notes_and_subcharts() {
        let sub = super::super::chart::pack(
            "cache",
            &[
                ("Chart.yaml", "apiVersion: v2\nname: cache\nversion: 1.0.0\n"),
                ("values.yaml", "port: 6379\n"),
                (
                    "templates/svc.yaml",
                    "kind: Service\nmetadata:\n  name: {{ .Release.Name }}-cache\nspec:\n  port: {{ .Values.port }}\n  zone: {{ .Values.global.zone }}\n",
                ),
            ]
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect(),
        )
        .unwrap();
        let mut files: BTreeMap<String, Vec<u8>> = [
            (
                "Chart.yaml",
                "apiVersion: v2\nname: web\nversion: 0.1.0\ndependencies:\n- name: cache\n  condition: cache.enabled\n",
            ),
            ("values.yaml", "replicas: 1\ncache:\n  enabled: true\n  port: 7000\nglobal:\n  zone: a\n"),
            ("templates/_helpers.tpl", "{{ define \"web.name\" }}{{ .Release.Name }}-web{{ end }}"),
            (
                "templates/app.yaml",
                "kind: Deployment\nmetadata:\n  name: {{ include \"web.name\" . }}\nspec:\n  replicas: {{ .Values.replicas }}\n---\n# empty\n---\nkind: ConfigMap\nmetadata:\n  name: {{ .Chart.Name }}-{{ .Release.Revision }}\ndata:\n  kube: {{ semverCompare \">=1.19-0\" .Capabilities.KubeVersion.GitVersion | quote }}\n  apps: {{ .Capabilities.APIVersions.Has \"apps/v1\" | quote }}\n  readme: {{ .Files.Get \"README.md\" | quote }}\n",
            ),
            (
                "templates/tests/t.yaml",
                "kind: Pod\nmetadata:\n  name: t\n  annotations:\n    helm.sh/hook: test\n",
            ),
            ("templates/NOTES.txt", "Reach {{ .Release.Name }}"),
            ("README.md", "hi"),
        ]
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect();
        files.insert("charts/cache-1.0.0.tgz".into(), sub);
        let chart = Chart::from_files(files).unwrap();

        let out = render(&chart, &release(), &json!({"replicas": 3})).unwrap();
        let names: Vec<String> = out
            .manifests
            .iter()
            .map(|m| format!("{}/{}", m.kind, m.name))
            .collect();
        assert_eq!(
            names,
            [
                "Service/prod-cache",
                "Deployment/prod-web",
                "ConfigMap/web-1"
            ]
        );
        assert_eq!(out.manifests[0].object["spec"]["port"], 7000);
        assert_eq!(out.manifests[0].object["spec"]["zone"], "a");
        assert_eq!(out.manifests[1].object["spec"]["replicas"], 3);
        let data = &out.manifests[2].object["data"];
        assert_eq!(data["kube"], "true");
        assert_eq!(data["apps"], "true");
        assert_eq!(data["readme"], "hi");
        assert_eq!(out.hooks, ["Pod/t"]);
        assert_eq!(out.notes, "Reach prod");

        let off = render(&chart, &release(), &json!({"cache": {"enabled": false}})).unwrap();
        assert_eq!(off.manifests.len(), 2);
    }

    #[test]
    fn errors_name_the_template() {
        let broken = chart(&[
            ("Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n"),
            (
                "templates/a.yaml",
                "kind: A\nmetadata:\n  name: x\n  bad: [\n",
            ),
        ]);
        let error = render(&broken, &release(), &json!({})).unwrap_err().0;
        assert!(error.contains("web/templates/a.yaml"), "{error}");
        let required = chart(&[
            ("Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n"),
            (
                "templates/a.yaml",
                "{{ required \"set image\" .Values.image }}",
            ),
        ]);
        let error = render(&required, &release(), &json!({})).unwrap_err().0;
        assert!(error.contains("set image"), "{error}");
        let nameless = chart(&[
            ("Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n"),
            ("templates/a.yaml", "kind: Service\n"),
        ]);
        assert!(render(&nameless, &release(), &json!({})).is_err());
    }
}
