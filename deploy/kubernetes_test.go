package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/tandem-analytics/tandem/schemas"
)

const tandemImage = "ghcr.io/tandem-analytics/tandem"

// object is one rendered Kubernetes object, decoded into its official type.
type object struct {
	kind, name string
	obj        any
}

// newTyped returns a pointer to the official Go type of apiVersion/kind;
// an object of any other kind fails the test (add it here on purpose).
func newTyped(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "batch/v1/Job":
		return &batchv1.Job{}
	case "batch/v1/CronJob":
		return &batchv1.CronJob{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}
	case "monitoring.coreos.com/v1/PrometheusRule":
		return &monitoringv1.PrometheusRule{}
	}
	return nil
}

// decodeStrict decodes one YAML object into its official type, refusing
// fields the type does not have (a typo such as readinessprobe would
// otherwise be dropped silently by the API server's older versions, or
// refused only at apply time).
func decodeStrict(t *testing.T, where string, doc []byte) object {
	t.Helper()
	js, err := yaml.YAMLToJSONStrict(doc) // refuses duplicate keys
	require.NoError(t, err, where)
	var meta metav1.TypeMeta
	require.NoError(t, json.Unmarshal(js, &meta), where)
	typed := newTyped(meta.APIVersion, meta.Kind)
	require.NotNil(t, typed, "%s: no official type known for %s %s", where, meta.APIVersion, meta.Kind)
	// The API server's own strict decoding: case-sensitive field names
	// (encoding/json would take "readinessprobe" for readinessProbe),
	// unknown and duplicate fields refused.
	strict, err := sigsjson.UnmarshalStrict(js, typed)
	require.NoError(t, err, "%s: %s does not decode into its official type", where, meta.Kind)
	require.Empty(t, strict, "%s: %s does not decode strictly into its official type", where, meta.Kind)
	om := typed.(metav1.Object)
	return object{kind: meta.Kind, name: om.GetName(), obj: typed}
}

// render builds a kustomization with kustomize's own library and decodes
// every object it produces.
func render(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	abs, err := filepath.Abs(dir)
	require.NoError(t, err)
	rm, err := k.Run(filesys.MakeFsOnDisk(), abs)
	require.NoError(t, err, "kustomize build %s", dir)
	var out []object
	for _, r := range rm.Resources() {
		doc, err := r.AsYAML()
		require.NoError(t, err)
		out = append(out, decodeStrict(t, fmt.Sprintf("%s: %s %s", dir, r.GetKind(), r.GetName()), doc))
	}
	return out
}

// byKind returns the objects of one kind, by name.
func byKind[T any](objs []object) map[string]*T {
	out := map[string]*T{}
	for _, o := range objs {
		if v, ok := o.obj.(*T); ok {
			out[o.name] = v
		}
	}
	return out
}

// generated finds an object that kustomize named prefix-<hash>.
func generated[T any](t *testing.T, m map[string]*T, prefix string) (*T, string) {
	t.Helper()
	for name, v := range m {
		if name == prefix || strings.HasPrefix(name, prefix+"-") {
			return v, name
		}
	}
	t.Fatalf("no %s in the rendered objects (have %v)", prefix, sortedKeys(m))
	return nil, ""
}

// workload is a pod template with where it came from.
type workload struct {
	where string
	kind  string
	name  string
	pod   *corev1.PodTemplateSpec
}

func TestKubernetesBaseRenders(t *testing.T) {
	objs := render(t, filepath.Join(repoRoot, "deploy", "kubernetes", "base"))
	require.NotEmpty(t, byKind[appsv1.Deployment](objs))
}

func TestKubernetesOverlays(t *testing.T) {
	cli := tandemCLI(t)
	dockerUID := dockerfileUID(t)
	for _, overlay := range []string{"dev", "prod"} {
		t.Run(overlay, func(t *testing.T) {
			objs := render(t, filepath.Join(repoRoot, "deploy", "kubernetes", "overlays", overlay))
			checkOverlay(t, overlay, objs, cli, dockerUID)
		})
	}
}

func dockerfileUID(t *testing.T) int64 {
	data, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "USER "); ok {
			uid, _, _ := strings.Cut(strings.TrimSpace(rest), ":")
			n, err := strconv.ParseInt(uid, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("the Dockerfile sets no USER")
	return 0
}

func checkOverlay(t *testing.T, overlay string, objs []object, cli cliInfo, dockerUID int64) {
	namespaces := byKind[corev1.Namespace](objs)
	require.Len(t, namespaces, 1, "the overlay creates its namespace")
	var ns string
	for n := range namespaces {
		ns = n
	}
	for _, o := range objs {
		if o.kind == "Namespace" {
			continue
		}
		require.Equal(t, ns, o.obj.(metav1.Object).GetNamespace(), "%s %s is in the overlay's namespace", o.kind, o.name)
	}

	configMaps := byKind[corev1.ConfigMap](objs)
	cfgMap, cfgMapName := generated(t, configMaps, "tandem-config")
	cfgText, ok := cfgMap.Data["tandem.yaml"]
	require.True(t, ok, "ConfigMap tandem-config holds tandem.yaml")
	envMap, envMapName := generated(t, configMaps, "tandem-env")

	// The secret's keys: generated in dev; in prod created out of band with
	// the keys of secret.example.yaml (placeholder values here).
	secrets := byKind[corev1.Secret](objs)
	secretKeys := map[string]string{}
	secretName := "tandem-secrets"
	switch overlay {
	case "dev":
		s, name := generated(t, secrets, "tandem-secrets")
		secretName = name
		for k, v := range s.Data {
			secretKeys[k] = string(v)
		}
	default:
		require.Empty(t, secrets, "production secrets are never committed: %s renders a Secret", overlay)
		data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "kubernetes", "overlays", overlay, "secret.example.yaml"))
		require.NoError(t, err)
		ex := decodeStrict(t, "secret.example.yaml", data).obj.(*corev1.Secret)
		for k, v := range ex.StringData {
			require.Equal(t, "REPLACE_ME", v, "secret.example.yaml holds placeholders only")
			secretKeys[k] = "example-" + strings.ToLower(k)
		}
	}

	sas := byKind[corev1.ServiceAccount](objs)
	services := byKind[corev1.Service](objs)
	pdbs := byKind[policyv1.PodDisruptionBudget](objs)
	hpas := byKind[autoscalingv2.HorizontalPodAutoscaler](objs)
	deployments := byKind[appsv1.Deployment](objs)
	cronJobs := byKind[batchv1.CronJob](objs)
	jobs := byKind[batchv1.Job](objs)

	var workloads []workload
	for name, d := range deployments {
		workloads = append(workloads, workload{"Deployment " + name, "Deployment", name, &d.Spec.Template})
	}
	for name, c := range cronJobs {
		workloads = append(workloads, workload{"CronJob " + name, "CronJob", name, &c.Spec.JobTemplate.Spec.Template})
	}
	for name, j := range jobs {
		workloads = append(workloads, workload{"Job " + name, "Job", name, &j.Spec.Template})
	}
	sort.Slice(workloads, func(i, j int) bool { return workloads[i].where < workloads[j].where })

	seenCmds := map[string]string{}
	var cfg *schemas.Config
	for _, w := range workloads {
		pod := w.pod.Spec
		require.Len(t, pod.Containers, 1, "%s: one container", w.where)
		c := pod.Containers[0]
		where := w.where + " container " + c.Name

		// image
		image, tag, _ := strings.Cut(c.Image, ":")
		require.Equal(t, tandemImage, image, "%s runs the tandem image", where)
		require.NotEmpty(t, tag, "%s: image tag", where)
		if overlay == "prod" {
			require.NotEqual(t, "latest", tag, "%s: production pins a version", where)
		}

		// command and flags
		cmd := checkArgs(t, cli, where, c.Args)
		require.Empty(t, c.Command, "%s keeps the image's ENTRYPOINT /tandem", where)
		if _, seen := seenCmds[cmd]; !seen {
			seenCmds[cmd] = w.where // the first, in name order
		}

		// configuration: TANDEM_CONFIG → a mounted ConfigMap holding tandem.yaml
		env := map[string]string{}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				env[e.Name] = e.Value
			} else {
				ok := e.ValueFrom.ResourceFieldRef != nil ||
					e.ValueFrom.FieldRef != nil && e.Name == "JOB_NAME" && e.ValueFrom.FieldRef.FieldPath == "metadata.labels['batch.kubernetes.io/job-name']"
				require.True(t, ok, "%s: env %s: a resource field, or JOB_NAME from the Job's label", where, e.Name)
			}
		}
		var usesEnvMap, usesSecret bool
		for _, ef := range c.EnvFrom {
			switch {
			case ef.ConfigMapRef != nil:
				require.Equal(t, envMapName, ef.ConfigMapRef.Name, "%s: envFrom ConfigMap", where)
				usesEnvMap = true
				for k, v := range envMap.Data {
					env[k] = v
				}
			case ef.SecretRef != nil:
				require.Equal(t, secretName, ef.SecretRef.Name, "%s: envFrom Secret", where)
				usesSecret = true
				for k, v := range secretKeys {
					env[k] = v
				}
			}
		}
		require.True(t, usesEnvMap && usesSecret, "%s takes its environment from tandem-env and tandem-secrets", where)
		cfgPath := env["TANDEM_CONFIG"]
		require.Equal(t, "/etc/tandem/tandem.yaml", cfgPath, "%s: TANDEM_CONFIG", where)
		volumes := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			volumes[v.Name] = v
		}
		mounts := map[string]corev1.VolumeMount{}
		configMounted := false
		for _, m := range c.VolumeMounts {
			v, ok := volumes[m.Name]
			require.True(t, ok, "%s mounts volume %s, which the pod does not define", where, m.Name)
			mounts[m.MountPath] = m
			if v.ConfigMap != nil {
				require.Equal(t, cfgMapName, v.ConfigMap.Name, "%s: config volume", where)
				require.True(t, m.ReadOnly, "%s: the configuration is mounted read-only", where)
				require.Equal(t, filepath.Dir(cfgPath), m.MountPath, "%s: TANDEM_CONFIG is inside the ConfigMap mount", where)
				configMounted = true
			}
		}
		require.True(t, configMounted, "%s mounts tandem-config", where)
		c1 := parseConfig(t, fmt.Sprintf("%s %s/tandem.yaml", overlay, where), []byte(cfgText), env)
		if cfg == nil {
			cfg = c1
		}
		checkStoreTLS(t, overlay, where, c, volumes, c1)

		// security: non-root (the image's user), read-only root, no privileges
		sc := pod.SecurityContext
		require.NotNil(t, sc, "%s: pod securityContext", where)
		require.True(t, sc.RunAsNonRoot != nil && *sc.RunAsNonRoot, "%s: runAsNonRoot", where)
		require.True(t, sc.RunAsUser != nil && *sc.RunAsUser == dockerUID, "%s: runAsUser is the image's user %d", where, dockerUID)
		require.NotNil(t, sc.SeccompProfile, "%s: seccomp profile", where)
		csc := c.SecurityContext
		require.NotNil(t, csc, "%s: container securityContext", where)
		require.True(t, csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem, "%s: read-only root file system", where)
		require.True(t, csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation, "%s: no privilege escalation", where)
		require.NotNil(t, csc.Capabilities, where)
		require.Equal(t, []corev1.Capability{"ALL"}, csc.Capabilities.Drop, "%s drops all capabilities", where)
		require.Contains(t, sas, pod.ServiceAccountName, "%s: service account", where)
		require.True(t, pod.AutomountServiceAccountToken != nil && !*pod.AutomountServiceAccountToken, "%s mounts no API token", where)

		// resources
		require.False(t, c.Resources.Requests.Cpu().IsZero(), "%s: CPU request", where)
		require.False(t, c.Resources.Requests.Memory().IsZero(), "%s: memory request", where)
		require.False(t, c.Resources.Limits.Memory().IsZero(), "%s: memory limit", where)
		require.True(t, c.Resources.Limits.Memory().Cmp(*c.Resources.Requests.Memory()) >= 0, "%s: memory limit ≥ request", where)

		// A writable --tmp-dir must be a mounted volume (the root is read-only).
		for i, a := range c.Args {
			if a == "--tmp-dir" && i+1 < len(c.Args) {
				m, ok := mounts[c.Args[i+1]]
				require.True(t, ok, "%s: --tmp-dir %s is not a mounted volume", where, c.Args[i+1])
				require.NotNil(t, volumes[m.Name].EmptyDir, "%s: --tmp-dir on an emptyDir", where)
			}
		}
		if _, ok := mounts["/tmp"]; !ok {
			t.Errorf("%s: mount a writable /tmp (the root file system is read-only)", where)
		}

		listen, long := components[cmd]
		switch w.kind {
		case "Deployment":
			require.True(t, long, "%s runs `tandem %s`, which is not a long-running component", where, cmd)
			require.Equal(t, "tandem-"+cmd, w.name, "%s is named after its command", where)
			checkServing(t, where, cmd, listenPort(t, listen(c1)), deployments[w.name], c, services, pdbs)
		case "CronJob", "Job":
			require.False(t, long, "%s runs the long-running `tandem %s` as a job", where, cmd)
			require.Contains(t, []corev1.RestartPolicy{corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure}, pod.RestartPolicy, where)
			require.Empty(t, c.Ports, "%s: a job serves nothing", where)
		}
	}
	for _, cmd := range []string{"ingest", "speed", "archive", "serve", "migrate", "batch", "export"} {
		require.Contains(t, seenCmds, cmd, "no workload runs `tandem %s`", cmd)
	}
	require.Equal(t, "Job tandem-migrate", seenCmds["migrate"])
	require.Equal(t, "CronJob tandem-batch", seenCmds["batch"])

	// The nightly batch CronJob.
	batch := cronJobs["tandem-batch"]
	require.NotNil(t, batch)
	require.Equal(t, batchv1.ForbidConcurrent, batch.Spec.ConcurrencyPolicy, "two batch runs must never overlap")
	require.NotNil(t, batch.Spec.StartingDeadlineSeconds)
	require.NotNil(t, batch.Spec.SuccessfulJobsHistoryLimit)
	require.NotNil(t, batch.Spec.FailedJobsHistoryLimit)
	require.NotNil(t, batch.Spec.JobTemplate.Spec.BackoffLimit)
	require.NotNil(t, batch.Spec.JobTemplate.Spec.ActiveDeadlineSeconds)
	require.Less(t, *batch.Spec.JobTemplate.Spec.ActiveDeadlineSeconds, int64(24*3600), "a run ends before the next night's starts")
	require.Len(t, strings.Fields(batch.Spec.Schedule), 5, "cron schedule")
	// Retries after a crashed run must outlast the crashed run's lock.
	lockTTL := cfg.Batch.LockTTL.D().Seconds()
	backoff, total := 10.0, 0.0
	for i := int32(0); i < *batch.Spec.JobTemplate.Spec.BackoffLimit; i++ {
		total += backoff
		backoff = min(2*backoff, 360)
	}
	require.Greater(t, total, lockTTL, "the CronJob's retries (back-off %.0fs in all) end before batch.lock_ttl (%.0fs) frees a dead run's lock", total, lockTTL)
	checkSplitBatch(t, batch, cronJobs["tandem-batch-split"])
	export := cronJobs["tandem-export"]
	require.NotNil(t, export)
	require.Equal(t, batchv1.ForbidConcurrent, export.Spec.ConcurrencyPolicy)

	// Autoscaling: ingest and serve by CPU; never speed or archive, which
	// scale by partitions.
	targets := map[string]bool{}
	for name, h := range hpas {
		require.Equal(t, "Deployment", h.Spec.ScaleTargetRef.Kind, name)
		targets[h.Spec.ScaleTargetRef.Name] = true
		require.Contains(t, deployments, h.Spec.ScaleTargetRef.Name, "HPA %s scales a Deployment of this overlay", name)
		require.Nil(t, deployments[h.Spec.ScaleTargetRef.Name].Spec.Replicas, "Deployment %s leaves replicas to its HPA", h.Spec.ScaleTargetRef.Name)
		require.NotNil(t, h.Spec.MinReplicas)
		require.LessOrEqual(t, *h.Spec.MinReplicas, h.Spec.MaxReplicas)
	}
	require.Equal(t, map[string]bool{"tandem-ingest": true, "tandem-serve": true}, targets, "HPAs for ingest and serve only")

	// Consumer-group members beyond the partitions sit idle.
	minPartitions := 0
	for _, s := range cfg.Streams {
		if len(cfg.ViewsOf(s.Name)) > 0 && (minPartitions == 0 || s.Partitions < minPartitions) {
			minPartitions = s.Partitions
		}
	}
	for _, name := range []string{"tandem-speed", "tandem-archive"} {
		d := deployments[name]
		require.NotNil(t, d.Spec.Replicas, "%s sets replicas", name)
		require.LessOrEqual(t, int(*d.Spec.Replicas), minPartitions, "%s: more replicas than partitions leaves members idle", name)
	}

	checkNetworkPolicies(t, objs, workloads, cfg)
	if overlay == "prod" {
		checkMonitoring(t, objs, services)
	}
}

// checkServing checks a long-running component's ports, probes, Service,
// scrape annotations and PodDisruptionBudget against its listen port.
func checkServing(t *testing.T, where, cmd string, port int, d *appsv1.Deployment, c corev1.Container,
	services map[string]*corev1.Service, pdbs map[string]*policyv1.PodDisruptionBudget) {
	t.Helper()
	require.Len(t, c.Ports, 1, "%s: one container port", where)
	require.Equal(t, int32(port), c.Ports[0].ContainerPort, "%s: the container port is the listen port of %s in tandem.yaml", where, cmd)
	portName := c.Ports[0].Name
	probe := func(p *corev1.Probe, path, what string) {
		require.NotNil(t, p, "%s: %s probe", where, what)
		require.NotNil(t, p.HTTPGet, "%s: %s probe over HTTP", where, what)
		require.Equal(t, path, p.HTTPGet.Path, "%s: %s probe path", where, what)
		if p.HTTPGet.Port.String() != portName {
			require.Equal(t, port, p.HTTPGet.Port.IntValue(), "%s: %s probe port", where, what)
		}
	}
	probe(c.ReadinessProbe, "/readyz", "readiness")
	probe(c.LivenessProbe, "/healthz", "liveness")
	if c.StartupProbe != nil {
		probe(c.StartupProbe, "/healthz", "startup")
	}

	ann := d.Spec.Template.Annotations
	require.Equal(t, "true", ann["prometheus.io/scrape"], "%s: scrape annotation", where)
	require.Equal(t, strconv.Itoa(port), ann["prometheus.io/port"], "%s: scrape port", where)
	require.Equal(t, "/metrics", ann["prometheus.io/path"], where)

	podLabels := labels.Set(d.Spec.Template.Labels)
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	require.NoError(t, err)
	require.True(t, sel.Matches(podLabels), "%s: the selector matches the pod labels", where)

	svc := services[d.Name]
	require.NotNil(t, svc, "%s: a Service named %s", where, d.Name)
	require.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels), "Service %s selects the pods of %s", svc.Name, d.Name)
	require.Len(t, svc.Spec.Ports, 1)
	sp := svc.Spec.Ports[0]
	require.Equal(t, int32(port), sp.Port, "Service %s port", svc.Name)
	if sp.TargetPort.String() != portName {
		require.Equal(t, port, sp.TargetPort.IntValue(), "Service %s targetPort", svc.Name)
	}

	pdb := pdbs[d.Name]
	require.NotNil(t, pdb, "%s: a PodDisruptionBudget", where)
	psel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	require.NoError(t, err)
	require.True(t, psel.Matches(podLabels), "PDB %s selects the pods of %s", pdb.Name, d.Name)
	require.NotNil(t, pdb.Spec.MaxUnavailable, "PDB %s: maxUnavailable (minAvailable would block drains of a single replica)", pdb.Name)
}

func checkMonitoring(t *testing.T, objs []object, services map[string]*corev1.Service) {
	sms := byKind[monitoringv1.ServiceMonitor](objs)
	require.Len(t, sms, 1)
	for _, sm := range sms {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		require.NoError(t, err)
		for _, cmd := range sortedKeys(components) {
			svc := services["tandem-"+cmd]
			require.True(t, sel.Matches(labels.Set(svc.Labels)), "ServiceMonitor %s selects Service %s", sm.Name, svc.Name)
			for _, ep := range sm.Spec.Endpoints {
				found := false
				for _, p := range svc.Spec.Ports {
					found = found || p.Name == ep.Port
				}
				require.True(t, found, "Service %s has the port %q the ServiceMonitor scrapes", svc.Name, ep.Port)
				require.Equal(t, "/metrics", ep.Path)
			}
		}
	}
	rules := byKind[monitoringv1.PrometheusRule](objs)
	require.Len(t, rules, 1)
	_, data := loadRules(t)
	var want struct {
		Groups []any `json:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(data, &want))
	for name, r := range rules {
		js, err := json.Marshal(r.Spec)
		require.NoError(t, err)
		var got struct {
			Groups []any `json:"groups"`
		}
		require.NoError(t, json.Unmarshal(js, &got))
		require.Equal(t, normalize(t, want.Groups), normalize(t, got.Groups),
			"PrometheusRule %s differs from deploy/observability/prometheus-rules.yaml; regenerate it", name)
	}
}

// normalize round-trips v through JSON, so values typed differently by the
// two decoders (durations, numbers) compare by their text.
func normalize(t *testing.T, v any) any {
	js, err := json.Marshal(v)
	require.NoError(t, err)
	var out any
	require.NoError(t, json.Unmarshal(js, &out))
	return out
}

// checkSplitBatch checks the split nightly run: an Indexed Job whose every
// pod is a worker of one run named after the Job, with N the same in
// completions, parallelism and --worker; suspended, so that it replaces
// tandem-batch rather than runs beside it; Forbid as tandem-batch.
func checkSplitBatch(t *testing.T, one, split *batchv1.CronJob) {
	require.NotNil(t, split, "CronJob tandem-batch-split offers the split batch run")
	require.Equal(t, batchv1.ForbidConcurrent, split.Spec.ConcurrencyPolicy, "two batch runs must never overlap")
	require.True(t, split.Spec.Suspend != nil && *split.Spec.Suspend, "the split CronJob is suspended in the base: an overlay enables it instead of tandem-batch")
	require.True(t, one.Spec.Suspend == nil || !*one.Spec.Suspend, "tandem-batch is the default")
	require.Equal(t, one.Spec.Schedule, split.Spec.Schedule)
	js := split.Spec.JobTemplate.Spec
	require.NotNil(t, js.CompletionMode)
	require.Equal(t, batchv1.IndexedCompletion, *js.CompletionMode)
	require.NotNil(t, js.Completions)
	require.NotNil(t, js.Parallelism)
	n := *js.Completions
	require.Positive(t, n)
	require.Equal(t, n, *js.Parallelism, "every worker runs at once: they wait for each other's parts")
	require.NotNil(t, js.BackoffLimitPerIndex, "a failed worker is retried for its index")
	require.NotNil(t, js.ActiveDeadlineSeconds)
	require.Less(t, *js.ActiveDeadlineSeconds, int64(24*3600), "a run ends before the next night's starts")
	c := js.Template.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	require.Contains(t, args, fmt.Sprintf("--worker $(JOB_COMPLETION_INDEX)/%d", n), "pod I is worker I of N")
	require.Contains(t, args, "--run $(JOB_NAME)", "the run is named after the Job")
	require.NotContains(t, args, "--no-publish", "worker 0 publishes")
	var jobName bool
	for _, e := range c.Env {
		if e.Name == "JOB_NAME" {
			jobName = e.ValueFrom != nil && e.ValueFrom.FieldRef != nil
		}
	}
	require.True(t, jobName, "JOB_NAME comes from the Job's label")
}
