//! `hivemind helm create NAME`: the starter chart `helm create` writes, file for file.
//!
//! The texts are Helm 3's (`pkg/chartutil/create.go`, the Helm 3 line whose starter has
//! `serviceAccount.automount`, `podLabels`, probes and volumes in values.yaml and an
//! `autoscaling/v2` HorizontalPodAutoscaler). As in Helm, `<CHARTNAME>` in the templates and
//! the `%s` in Chart.yaml and values.yaml become the chart's name; nothing else is changed.
//! Helm releases from 3.18 on also write `templates/httproute.yaml`; this starter does not.

use std::io;
use std::path::{Path, PathBuf};

/// One file of a new chart: its path relative to the chart's directory, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartFile {
    pub path: &'static str,
    pub content: String,
}

/// The longest chart name Helm accepts (below the limits of file systems and of Kubernetes
/// name fields).
const MAX_CHART_NAME_LENGTH: usize = 250;

/// The directory for dependencies, which `helm create` makes empty.
pub const CHARTS_DIR: &str = "charts";

/// Helm's rule for a chart name, `^[a-zA-Z0-9._-]+$` of at most 250 characters. Unlike Helm,
/// `.` and `..` are refused too: as a directory name they would not make a new directory.
pub fn validate_chart_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CHART_NAME_LENGTH {
        return Err(format!(
            "chart name must be between 1 and {MAX_CHART_NAME_LENGTH} characters"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "chart name {name:?} has the character {bad:?}: only letters, digits, '.', '_' and '-' are allowed (^[a-zA-Z0-9._-]+$)"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("chart name {name:?} is not a directory name"));
    }
    Ok(())
}

/// The files of a new chart named `name`, in the order Helm writes them. `description`
/// replaces Chart.yaml's "A Helm chart for Kubernetes" (as a double-quoted YAML string).
/// The name is not checked here: see [`validate_chart_name`].
pub fn chart_files(name: &str, description: Option<&str>) -> Vec<ChartFile> {
    let mut chart_yaml = CHART_YAML.replacen("%s", name, 1);
    if let Some(description) = description {
        chart_yaml = chart_yaml.replacen(
            "description: A Helm chart for Kubernetes\n",
            &format!("description: {}\n", yaml_quote(description)),
            1,
        );
    }
    let template = |path: &'static str, source: &str| ChartFile {
        path,
        content: source.replace("<CHARTNAME>", name),
    };
    vec![
        ChartFile {
            path: "Chart.yaml",
            content: chart_yaml,
        },
        ChartFile {
            path: "values.yaml",
            content: VALUES_YAML.replacen("%s", name, 1),
        },
        ChartFile {
            path: ".helmignore",
            content: HELMIGNORE.to_string(),
        },
        template("templates/ingress.yaml", INGRESS),
        template("templates/deployment.yaml", DEPLOYMENT),
        template("templates/service.yaml", SERVICE),
        template("templates/serviceaccount.yaml", SERVICE_ACCOUNT),
        template("templates/hpa.yaml", HPA),
        template("templates/NOTES.txt", NOTES),
        template("templates/_helpers.tpl", HELPERS),
        template("templates/tests/test-connection.yaml", TEST_CONNECTION),
    ]
}

/// Writes a new chart to `parent/name` (with its empty `charts/`) and returns that path.
/// `parent` must exist; if `parent/name` exists already nothing is written and the error is
/// `AlreadyExists` (Helm would overwrite the files in it). If writing fails part way, the
/// new directory is removed again.
pub fn write_chart(parent: &Path, name: &str, description: Option<&str>) -> io::Result<PathBuf> {
    validate_chart_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let dir = parent.join(name);
    std::fs::create_dir(&dir).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", dir.display()),
            )
        } else {
            e
        }
    })?;
    let written = write_files(&dir, &chart_files(name, description));
    if let Err(e) = written {
        // Best effort: the error that matters is the one that stopped the writing.
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(dir)
}

fn write_files(dir: &Path, files: &[ChartFile]) -> io::Result<()> {
    for file in files {
        let path = dir.join(file.path);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)?;
        }
        std::fs::write(&path, &file.content)?;
    }
    std::fs::create_dir_all(dir.join(CHARTS_DIR))
}

/// `text` as a YAML double-quoted scalar: `"` and `\` escaped, and so is every character a
/// YAML reader would not keep as it is (controls, DEL, C1 controls, line and paragraph
/// separators, byte-order marks).
fn yaml_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const CHART_YAML: &str = r#"apiVersion: v2
name: %s
description: A Helm chart for Kubernetes

# A chart can be either an 'application' or a 'library' chart.
#
# Application charts are a collection of templates that can be packaged into versioned archives
# to be deployed.
#
# Library charts provide useful utilities or functions for the chart developer. They're included as
# a dependency of application charts to inject those utilities and functions into the rendering
# pipeline. Library charts do not define any templates and therefore cannot be deployed.
type: application

# This is the chart version. This version number should be incremented each time you make changes
# to the chart and its templates, including the app version.
# Versions are expected to follow Semantic Versioning (https://semver.org/)
version: 0.1.0

# This is the version number of the application being deployed. This version number should be
# incremented each time you make changes to the application. Versions are not expected to
# follow Semantic Versioning. They should reflect the version the application is using.
# It is recommended to use it with quotes.
appVersion: "1.16.0"
"#;

const VALUES_YAML: &str = r#"# Default values for %s.
# This is a YAML-formatted file.
# Declare variables to be passed into your templates.

replicaCount: 1

image:
  repository: nginx
  pullPolicy: IfNotPresent
  # Overrides the image tag whose default is the chart appVersion.
  tag: ""

imagePullSecrets: []
nameOverride: ""
fullnameOverride: ""

serviceAccount:
  # Specifies whether a service account should be created
  create: true
  # Automatically mount a ServiceAccount's API credentials?
  automount: true
  # Annotations to add to the service account
  annotations: {}
  # The name of the service account to use.
  # If not set and create is true, a name is generated using the fullname template
  name: ""

podAnnotations: {}
podLabels: {}

podSecurityContext: {}
  # fsGroup: 2000

securityContext: {}
  # capabilities:
  #   drop:
  #   - ALL
  # readOnlyRootFilesystem: true
  # runAsNonRoot: true
  # runAsUser: 1000

service:
  type: ClusterIP
  port: 80

ingress:
  enabled: false
  className: ""
  annotations: {}
    # kubernetes.io/ingress.class: nginx
    # kubernetes.io/tls-acme: "true"
  hosts:
    - host: chart-example.local
      paths:
        - path: /
          pathType: ImplementationSpecific
  tls: []
  #  - secretName: chart-example-tls
  #    hosts:
  #      - chart-example.local

resources: {}
  # We usually recommend not to specify default resources and to leave this as a conscious
  # choice for the user. This also increases chances charts run on environments with little
  # resources, such as Minikube. If you do want to specify resources, uncomment the following
  # lines, adjust them as necessary, and remove the curly braces after 'resources:'.
  # limits:
  #   cpu: 100m
  #   memory: 128Mi
  # requests:
  #   cpu: 100m
  #   memory: 128Mi

livenessProbe:
  httpGet:
    path: /
    port: http
readinessProbe:
  httpGet:
    path: /
    port: http

autoscaling:
  enabled: false
  minReplicas: 1
  maxReplicas: 100
  targetCPUUtilizationPercentage: 80
  # targetMemoryUtilizationPercentage: 80

# Additional volumes on the output Deployment definition.
volumes: []
# - name: foo
#   secret:
#     secretName: mysecret
#     optional: false

# Additional volumeMounts on the output Deployment definition.
volumeMounts: []
# - name: foo
#   mountPath: "/etc/foo"
#   readOnly: true

nodeSelector: {}

tolerations: []

affinity: {}
"#;

const HELMIGNORE: &str = r#"# Patterns to ignore when building packages.
# This supports shell glob matching, relative path matching, and
# negation (prefixed with !). Only one pattern per line.
.DS_Store
# Common VCS dirs
.git/
.gitignore
.bzr/
.bzrignore
.hg/
.hgignore
.svn/
# Common backup files
*.swp
*.bak
*.tmp
*.orig
*~
# Various IDEs
.project
.idea/
*.tmproj
.vscode/
"#;

const INGRESS: &str = r#"{{- if .Values.ingress.enabled -}}
{{- $fullName := include "<CHARTNAME>.fullname" . -}}
{{- $svcPort := .Values.service.port -}}
{{- if and .Values.ingress.className (not (semverCompare ">=1.18-0" .Capabilities.KubeVersion.GitVersion)) }}
  {{- if not (hasKey .Values.ingress.annotations "kubernetes.io/ingress.class") }}
  {{- $_ := set .Values.ingress.annotations "kubernetes.io/ingress.class" .Values.ingress.className}}
  {{- end }}
{{- end }}
{{- if semverCompare ">=1.19-0" .Capabilities.KubeVersion.GitVersion -}}
apiVersion: networking.k8s.io/v1
{{- else if semverCompare ">=1.14-0" .Capabilities.KubeVersion.GitVersion -}}
apiVersion: networking.k8s.io/v1beta1
{{- else -}}
apiVersion: extensions/v1beta1
{{- end }}
kind: Ingress
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "<CHARTNAME>.labels" . | nindent 4 }}
  {{- with .Values.ingress.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if and .Values.ingress.className (semverCompare ">=1.18-0" .Capabilities.KubeVersion.GitVersion) }}
  ingressClassName: {{ .Values.ingress.className }}
  {{- end }}
  {{- if .Values.ingress.tls }}
  tls:
    {{- range .Values.ingress.tls }}
    - hosts:
        {{- range .hosts }}
        - {{ . | quote }}
        {{- end }}
      secretName: {{ .secretName }}
    {{- end }}
  {{- end }}
  rules:
    {{- range .Values.ingress.hosts }}
    - host: {{ .host | quote }}
      http:
        paths:
          {{- range .paths }}
          - path: {{ .path }}
            {{- if and .pathType (semverCompare ">=1.18-0" $.Capabilities.KubeVersion.GitVersion) }}
            pathType: {{ .pathType }}
            {{- end }}
            backend:
              {{- if semverCompare ">=1.19-0" $.Capabilities.KubeVersion.GitVersion }}
              service:
                name: {{ $fullName }}
                port:
                  number: {{ $svcPort }}
              {{- else }}
              serviceName: {{ $fullName }}
              servicePort: {{ $svcPort }}
              {{- end }}
          {{- end }}
    {{- end }}
{{- end }}
"#;

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "<CHARTNAME>.fullname" . }}
  labels:
    {{- include "<CHARTNAME>.labels" . | nindent 4 }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicaCount }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "<CHARTNAME>.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      {{- with .Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      labels:
        {{- include "<CHARTNAME>.labels" . | nindent 8 }}
        {{- with .Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      serviceAccountName: {{ include "<CHARTNAME>.serviceAccountName" . }}
      securityContext:
        {{- toYaml .Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .Chart.Name }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ .Values.service.port }}
              protocol: TCP
          livenessProbe:
            {{- toYaml .Values.livenessProbe | nindent 12 }}
          readinessProbe:
            {{- toYaml .Values.readinessProbe | nindent 12 }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          {{- with .Values.volumeMounts }}
          volumeMounts:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      {{- with .Values.volumes }}
      volumes:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
"#;

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ include "<CHARTNAME>.fullname" . }}
  labels:
    {{- include "<CHARTNAME>.labels" . | nindent 4 }}
spec:
  type: {{ .Values.service.type }}
  ports:
    - port: {{ .Values.service.port }}
      targetPort: http
      protocol: TCP
      name: http
  selector:
    {{- include "<CHARTNAME>.selectorLabels" . | nindent 4 }}
"#;

const SERVICE_ACCOUNT: &str = r#"{{- if .Values.serviceAccount.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "<CHARTNAME>.serviceAccountName" . }}
  labels:
    {{- include "<CHARTNAME>.labels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: {{ .Values.serviceAccount.automount }}
{{- end }}
"#;

const HPA: &str = r#"{{- if .Values.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "<CHARTNAME>.fullname" . }}
  labels:
    {{- include "<CHARTNAME>.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "<CHARTNAME>.fullname" . }}
  minReplicas: {{ .Values.autoscaling.minReplicas }}
  maxReplicas: {{ .Values.autoscaling.maxReplicas }}
  metrics:
    {{- if .Values.autoscaling.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .Values.autoscaling.targetCPUUtilizationPercentage }}
    {{- end }}
    {{- if .Values.autoscaling.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ .Values.autoscaling.targetMemoryUtilizationPercentage }}
    {{- end }}
{{- end }}
"#;

const NOTES: &str = r#"1. Get the application URL by running these commands:
{{- if .Values.ingress.enabled }}
{{- range $host := .Values.ingress.hosts }}
  {{- range .paths }}
  http{{ if $.Values.ingress.tls }}s{{ end }}://{{ $host.host }}{{ .path }}
  {{- end }}
{{- end }}
{{- else if contains "NodePort" .Values.service.type }}
  export NODE_PORT=$(kubectl get --namespace {{ .Release.Namespace }} -o jsonpath="{.spec.ports[0].nodePort}" services {{ include "<CHARTNAME>.fullname" . }})
  export NODE_IP=$(kubectl get nodes --namespace {{ .Release.Namespace }} -o jsonpath="{.items[0].status.addresses[0].address}")
  echo http://$NODE_IP:$NODE_PORT
{{- else if contains "LoadBalancer" .Values.service.type }}
     NOTE: It may take a few minutes for the LoadBalancer IP to be available.
           You can watch the status of by running 'kubectl get --namespace {{ .Release.Namespace }} svc -w {{ include "<CHARTNAME>.fullname" . }}'
  export SERVICE_IP=$(kubectl get svc --namespace {{ .Release.Namespace }} {{ include "<CHARTNAME>.fullname" . }} --template "{{"{{ range (index .status.loadBalancer.ingress 0) }}{{.}}{{ end }}"}}")
  echo http://$SERVICE_IP:{{ .Values.service.port }}
{{- else if contains "ClusterIP" .Values.service.type }}
  export POD_NAME=$(kubectl get pods --namespace {{ .Release.Namespace }} -l "app.kubernetes.io/name={{ include "<CHARTNAME>.name" . }},app.kubernetes.io/instance={{ .Release.Name }}" -o jsonpath="{.items[0].metadata.name}")
  export CONTAINER_PORT=$(kubectl get pod --namespace {{ .Release.Namespace }} $POD_NAME -o jsonpath="{.spec.containers[0].ports[0].containerPort}")
  echo "Visit http://127.0.0.1:8080 to use your application"
  kubectl --namespace {{ .Release.Namespace }} port-forward $POD_NAME 8080:$CONTAINER_PORT
{{- end }}
"#;

const HELPERS: &str = r#"{{/*
Expand the name of the chart.
*/}}
{{- define "<CHARTNAME>.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "<CHARTNAME>.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "<CHARTNAME>.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "<CHARTNAME>.labels" -}}
helm.sh/chart: {{ include "<CHARTNAME>.chart" . }}
{{ include "<CHARTNAME>.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "<CHARTNAME>.selectorLabels" -}}
app.kubernetes.io/name: {{ include "<CHARTNAME>.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "<CHARTNAME>.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "<CHARTNAME>.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}
"#;

const TEST_CONNECTION: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: "{{ include "<CHARTNAME>.fullname" . }}-test-connection"
  labels:
    {{- include "<CHARTNAME>.labels" . | nindent 4 }}
  annotations:
    "helm.sh/hook": test
spec:
  containers:
    - name: wget
      image: busybox
      command: ['wget']
      args: ['{{ include "<CHARTNAME>.fullname" . }}:{{ .Values.service.port }}']
  restartPolicy: Never
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helm::template::Templates;
    use crate::helm::values::{apply_set, coalesce, parse_yaml};
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    fn file<'a>(files: &'a [ChartFile], path: &str) -> &'a str {
        &files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no {path}"))
            .content
    }

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
    }

    /// `.Chart` as Helm gives it to templates, from Chart.yaml.
    fn chart_object(chart_yaml: &str) -> Value {
        let chart: Value = serde_yaml::from_str(chart_yaml).unwrap();
        json!({
            "Name": chart["name"],
            "Version": chart["version"],
            "AppVersion": chart["appVersion"],
            "Description": chart["description"],
            "APIVersion": chart["apiVersion"],
            "Type": chart["type"],
        })
    }

    /// Renders every file under templates/ (but `_helpers.tpl`) of a new chart `name` with its
    /// values.yaml and then `sets` applied, as release "rel" in namespace "default".
    fn render(name: &str, sets: &[&str]) -> BTreeMap<String, String> {
        let files = chart_files(name, None);
        let mut user = json!({});
        for expr in sets {
            apply_set(&mut user, expr).unwrap();
        }
        let values = coalesce(&parse_yaml(file(&files, "values.yaml")).unwrap(), &user);
        let mut templates = Templates::new();
        for f in files.iter().filter(|f| f.path.starts_with("templates/")) {
            templates
                .add(&format!("{name}/{}", f.path), &f.content)
                .unwrap_or_else(|e| panic!("{}: {e}", f.path));
        }
        let mut rendered = BTreeMap::new();
        for f in files
            .iter()
            .filter(|f| f.path.starts_with("templates/") && !f.path.ends_with(".tpl"))
        {
            let template = format!("{name}/{}", f.path);
            let data = json!({
                "Values": values,
                "Release": {"Name": "rel", "Namespace": "default", "Service": "Helm",
                            "IsInstall": true, "IsUpgrade": false, "Revision": 1},
                "Chart": chart_object(file(&files, "Chart.yaml")),
                "Capabilities": {"KubeVersion": {"Version": "v1.31.0", "Major": "1",
                                                 "Minor": "31", "GitVersion": "v1.31.0"},
                                 "APIVersions": []},
                "Template": {"Name": template, "BasePath": format!("{name}/templates")},
            });
            let out = templates
                .render(&template, &data)
                .unwrap_or_else(|e| panic!("{template}: {e}"));
            rendered.insert(f.path.to_string(), out);
        }
        rendered
    }

    #[test]
    fn files_follow_helms_layout() {
        let files = chart_files("web", None);
        let paths: Vec<_> = files.iter().map(|f| f.path).collect();
        assert_eq!(
            paths,
            [
                "Chart.yaml",
                "values.yaml",
                ".helmignore",
                "templates/ingress.yaml",
                "templates/deployment.yaml",
                "templates/service.yaml",
                "templates/serviceaccount.yaml",
                "templates/hpa.yaml",
                "templates/NOTES.txt",
                "templates/_helpers.tpl",
                "templates/tests/test-connection.yaml",
            ]
        );
        for f in &files {
            assert!(!f.content.contains("<CHARTNAME>"), "{}", f.path);
            assert!(f.content.ends_with('\n'), "{}", f.path);
        }
        assert!(file(&files, "values.yaml").starts_with("# Default values for web.\n"));
        assert!(
            file(&files, "templates/_helpers.tpl").contains(r#"{{- define "web.fullname" -}}"#)
        );
        // Only the first `%s` is the name: the helpers' printf keeps its own.
        assert!(file(&files, "templates/_helpers.tpl").contains(r#"printf "%s-%s" .Release.Name"#));
        assert!(file(&files, ".helmignore").contains("\n.git/\n"));
    }

    #[test]
    fn chart_yaml_and_values_parse() {
        let files = chart_files("my-app", None);
        let chart = yaml(file(&files, "Chart.yaml"));
        assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
        assert_eq!(chart["name"].as_str(), Some("my-app"));
        assert_eq!(
            chart["description"].as_str(),
            Some("A Helm chart for Kubernetes")
        );
        assert_eq!(chart["type"].as_str(), Some("application"));
        assert_eq!(chart["version"].as_str(), Some("0.1.0"));
        assert_eq!(chart["appVersion"].as_str(), Some("1.16.0"));

        let values = parse_yaml(file(&files, "values.yaml")).unwrap();
        assert_eq!(values["replicaCount"], 1);
        assert_eq!(values["image"]["repository"], "nginx");
        assert_eq!(values["image"]["tag"], "");
        assert_eq!(values["service"], json!({"type": "ClusterIP", "port": 80}));
        assert_eq!(values["ingress"]["enabled"], false);
        assert_eq!(values["autoscaling"]["maxReplicas"], 100);
        assert_eq!(values["serviceAccount"]["automount"], true);
        assert_eq!(values["podSecurityContext"], json!({}));
        assert_eq!(values["volumes"], json!([]));
    }

    #[test]
    fn a_description_is_quoted_for_yaml() {
        for description in [
            "My web app",
            "key: value # not a comment",
            "- not a list",
            "\"quoted\" and \\back\\slashed",
            "two\nlines\tand a tab\r",
            "{not: a map}",
            "'single' & *star !tag %percent @at `tick`",
            "bell\u{7} del\u{7f} nel\u{85} ls\u{2028} bom\u{feff}",
            "ünïcödé ✓ 🚀",
            "true",
            "",
        ] {
            let files = chart_files("web", Some(description));
            let chart = yaml(file(&files, "Chart.yaml"));
            assert_eq!(chart["description"].as_str(), Some(description));
            assert_eq!(chart["name"].as_str(), Some("web"));
            assert_eq!(chart["version"].as_str(), Some("0.1.0"));
        }
        let files = chart_files("web", Some("Hi"));
        assert!(file(&files, "Chart.yaml").contains("\ndescription: \"Hi\"\n"));
    }

    #[test]
    fn chart_names() {
        for good in ["web", "my-chart_1.0", "A", "x.y-z", &"a".repeat(250)] {
            assert_eq!(validate_chart_name(good), Ok(()), "{good}");
        }
        let error = |name: &str| validate_chart_name(name).unwrap_err();
        assert!(error("").contains("between 1 and 250"));
        assert!(error(&"a".repeat(251)).contains("between 1 and 250"));
        assert!(error("a/b").contains("'/'"), "{}", error("a/b"));
        assert!(error("a b").contains("' '"));
        assert!(error("ünï").contains("'ü'"));
        assert!(error("$x").contains("'$'"));
        assert!(error("a\nb").contains("'\\n'"));
        assert!(error(".").contains("not a directory name"));
        assert!(error("..").contains("not a directory name"));
    }

    #[test]
    fn write_chart_writes_every_file_and_refuses_an_existing_directory() {
        let parent = tempfile::tempdir().unwrap();
        let dir = write_chart(parent.path(), "web", Some("Web site")).unwrap();
        assert_eq!(dir, parent.path().join("web"));
        for f in chart_files("web", Some("Web site")) {
            assert_eq!(
                std::fs::read_to_string(dir.join(f.path)).unwrap(),
                f.content,
                "{}",
                f.path
            );
        }
        let charts = dir.join(CHARTS_DIR);
        assert!(charts.is_dir());
        assert_eq!(std::fs::read_dir(&charts).unwrap().count(), 0);

        let again = write_chart(parent.path(), "web", None).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert!(again.to_string().contains("already exists"), "{again}");
        // The existing chart is untouched.
        let chart = std::fs::read_to_string(dir.join("Chart.yaml")).unwrap();
        assert!(chart.contains("description: \"Web site\""));

        std::fs::write(parent.path().join("file"), "x").unwrap();
        let on_file = write_chart(parent.path(), "file", None).unwrap_err();
        assert_eq!(on_file.kind(), io::ErrorKind::AlreadyExists);

        let bad = write_chart(parent.path(), "../escape", None).unwrap_err();
        assert_eq!(bad.kind(), io::ErrorKind::InvalidInput);
        assert!(!parent.path().join("../escape").exists());

        let missing = write_chart(&parent.path().join("nowhere"), "web", None).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn every_template_renders_with_the_default_values() {
        let rendered = render("web", &[]);
        assert_eq!(
            rendered.keys().collect::<Vec<_>>(),
            [
                "templates/NOTES.txt",
                "templates/deployment.yaml",
                "templates/hpa.yaml",
                "templates/ingress.yaml",
                "templates/service.yaml",
                "templates/serviceaccount.yaml",
                "templates/tests/test-connection.yaml",
            ]
        );
        // Disabled by default.
        assert_eq!(rendered["templates/hpa.yaml"].trim(), "");
        assert_eq!(rendered["templates/ingress.yaml"].trim(), "");

        let deployment = yaml(&rendered["templates/deployment.yaml"]);
        assert_eq!(deployment["kind"].as_str(), Some("Deployment"));
        assert_eq!(deployment["apiVersion"].as_str(), Some("apps/v1"));
        assert_eq!(deployment["metadata"]["name"].as_str(), Some("rel-web"));
        let labels = &deployment["metadata"]["labels"];
        assert_eq!(labels["helm.sh/chart"].as_str(), Some("web-0.1.0"));
        assert_eq!(labels["app.kubernetes.io/version"].as_str(), Some("1.16.0"));
        assert_eq!(
            labels["app.kubernetes.io/managed-by"].as_str(),
            Some("Helm")
        );
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"].as_u64(), Some(1));
        assert_eq!(
            spec["selector"]["matchLabels"]["app.kubernetes.io/instance"].as_str(),
            Some("rel")
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["serviceAccountName"].as_str(), Some("rel-web"));
        let container = &pod["containers"][0];
        assert_eq!(container["name"].as_str(), Some("web"));
        assert_eq!(container["image"].as_str(), Some("nginx:1.16.0"));
        assert_eq!(container["imagePullPolicy"].as_str(), Some("IfNotPresent"));
        assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(80));
        assert_eq!(
            container["livenessProbe"]["httpGet"]["port"].as_str(),
            Some("http")
        );
        assert!(pod.get("volumes").is_none());

        let service = yaml(&rendered["templates/service.yaml"]);
        assert_eq!(service["kind"].as_str(), Some("Service"));
        assert_eq!(service["spec"]["type"].as_str(), Some("ClusterIP"));
        assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(80));

        let account = yaml(&rendered["templates/serviceaccount.yaml"]);
        assert_eq!(account["kind"].as_str(), Some("ServiceAccount"));
        assert_eq!(
            account["automountServiceAccountToken"].as_bool(),
            Some(true)
        );

        let test = yaml(&rendered["templates/tests/test-connection.yaml"]);
        assert_eq!(
            test["metadata"]["name"].as_str(),
            Some("rel-web-test-connection")
        );
        assert_eq!(
            test["spec"]["containers"][0]["args"][0].as_str(),
            Some("rel-web:80")
        );

        let notes = &rendered["templates/NOTES.txt"];
        assert!(
            notes.contains(
                "kubectl --namespace default port-forward $POD_NAME 8080:$CONTAINER_PORT"
            ),
            "{notes}"
        );
        assert!(notes.contains("app.kubernetes.io/name=web,app.kubernetes.io/instance=rel"));
    }

    #[test]
    fn templates_render_with_the_optional_parts_enabled() {
        let rendered = render(
            "shop",
            &[
                "ingress.enabled=true,ingress.className=nginx",
                "ingress.tls[0].secretName=shop-tls,ingress.tls[0].hosts={chart-example.local}",
                "ingress.annotations.cert-manager\\.io/cluster-issuer=letsencrypt",
                "autoscaling.enabled=true,autoscaling.targetMemoryUtilizationPercentage=70",
                "serviceAccount.create=false,service.type=NodePort,image.tag=1.27",
                "podLabels.team=a,podAnnotations.note=b,nameOverride=store",
                "volumes[0].name=data,volumes[0].emptyDir.medium=Memory",
                "volumeMounts[0].name=data,volumeMounts[0].mountPath=/data",
            ],
        );
        for (path, text) in &rendered {
            if path.ends_with(".yaml") {
                yaml(text);
            }
        }
        let ingress = yaml(&rendered["templates/ingress.yaml"]);
        assert_eq!(ingress["apiVersion"].as_str(), Some("networking.k8s.io/v1"));
        assert_eq!(ingress["metadata"]["name"].as_str(), Some("rel-store"));
        assert_eq!(
            ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"].as_str(),
            Some("letsencrypt")
        );
        assert_eq!(ingress["spec"]["ingressClassName"].as_str(), Some("nginx"));
        assert_eq!(
            ingress["spec"]["tls"][0]["secretName"].as_str(),
            Some("shop-tls")
        );
        let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
        assert_eq!(path["pathType"].as_str(), Some("ImplementationSpecific"));
        assert_eq!(
            path["backend"]["service"]["port"]["number"].as_u64(),
            Some(80)
        );

        let hpa = yaml(&rendered["templates/hpa.yaml"]);
        assert_eq!(hpa["kind"].as_str(), Some("HorizontalPodAutoscaler"));
        assert_eq!(hpa["spec"]["maxReplicas"].as_u64(), Some(100));
        assert_eq!(hpa["spec"]["metrics"].as_sequence().map(Vec::len), Some(2));

        let deployment = yaml(&rendered["templates/deployment.yaml"]);
        assert!(deployment["spec"].get("replicas").is_none());
        let template = &deployment["spec"]["template"];
        assert_eq!(template["metadata"]["labels"]["team"].as_str(), Some("a"));
        assert_eq!(
            template["metadata"]["annotations"]["note"].as_str(),
            Some("b")
        );
        let pod = &template["spec"];
        assert_eq!(pod["serviceAccountName"].as_str(), Some("default"));
        assert_eq!(pod["containers"][0]["image"].as_str(), Some("nginx:1.27"));
        assert_eq!(
            pod["volumes"][0]["emptyDir"]["medium"].as_str(),
            Some("Memory")
        );
        assert_eq!(
            pod["containers"][0]["volumeMounts"][0]["mountPath"].as_str(),
            Some("/data")
        );

        assert_eq!(rendered["templates/serviceaccount.yaml"].trim(), "");
        assert!(rendered["templates/NOTES.txt"].contains("https://chart-example.local/"));
    }

    #[test]
    fn notes_follow_the_service_type() {
        let notes = &render("web", &["service.type=NodePort"])["templates/NOTES.txt"];
        assert!(notes.contains("export NODE_PORT=$(kubectl get --namespace default -o jsonpath=\"{.spec.ports[0].nodePort}\" services rel-web)"), "{notes}");
        let notes = &render("web", &["service.type=LoadBalancer"])["templates/NOTES.txt"];
        assert!(
            notes.contains(
                r#"--template "{{ range (index .status.loadBalancer.ingress 0) }}{{.}}{{ end }}")"#
            ),
            "{notes}"
        );
    }
}
