package deploy

import (
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tandem-analytics/tandem/config"
	"github.com/tandem-analytics/tandem/schemas"
)

// storesOf is what each component's pods connect to (their commands open
// these clients; cmd/tandem).
var storesOf = map[string][]string{
	"ingest":  {"kafka"},
	"speed":   {"kafka", "clickhouse"},
	"archive": {"kafka", "s3"},
	"serve":   {"kafka", "clickhouse", "s3"}, // its health report reads Kafka's offsets
	"batch":   {"s3", "clickhouse"},
	"export":  {"s3"},
	"migrate": {"clickhouse"},
}

// checkNetworkPolicies: every tandem pod is under a default deny; each may
// reach DNS and the ports of the stores its component uses, as the
// overlay's tandem.yaml addresses them; only ingest and serve take traffic
// from the ingress controller, on their listen ports; no rule admits
// everyone.
func checkNetworkPolicies(t *testing.T, objs []object, workloads []workload, cfg *config.Config) {
	policies := byKind[networkingv1.NetworkPolicy](objs)
	deny := policies["tandem-default-deny"]
	require.NotNil(t, deny, "NetworkPolicy tandem-default-deny")
	require.Empty(t, deny.Spec.Ingress)
	require.Empty(t, deny.Spec.Egress)
	require.ElementsMatch(t, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}, deny.Spec.PolicyTypes)

	storePort := map[string]int{
		"kafka":      hostPort(t, cfg.Kafka.Brokers[0], 0),
		"clickhouse": hostPort(t, cfg.ClickHouse.Addr, 0),
		"s3":         s3Port(t, cfg.S3),
	}
	public := map[string]int{"ingest": listenPort(t, cfg.Ingest.Listen), "serve": listenPort(t, cfg.Serve.Listen)}
	for _, w := range workloads {
		comp := w.pod.Labels["app.kubernetes.io/component"]
		uses, ok := storesOf[comp]
		require.True(t, ok, "%s: component %q has no entry in storesOf", w.where, comp)
		var applying []*networkingv1.NetworkPolicy
		for _, p := range policies {
			sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
			require.NoError(t, err)
			if sel.Matches(labels.Set(w.pod.Labels)) {
				applying = append(applying, p)
			}
		}
		require.Contains(t, applying, deny, "%s is under tandem-default-deny", w.where)

		anywhere, dns := map[int]bool{}, false
		fromIngress := []int{}
		for _, p := range applying {
			for _, r := range p.Spec.Egress {
				for _, port := range r.Ports {
					n := port.Port.IntValue()
					if len(r.To) == 0 {
						anywhere[n] = true
					}
					if n == 53 {
						dns = true
					}
				}
			}
			for _, r := range p.Spec.Ingress {
				require.NotEmpty(t, r.From, "%s: NetworkPolicy %s admits everyone", w.where, p.Name)
				for _, f := range r.From {
					if f.NamespaceSelector != nil && f.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "ingress-nginx" {
						for _, port := range r.Ports {
							fromIngress = append(fromIngress, port.Port.IntValue())
						}
					}
				}
			}
		}
		require.True(t, dns, "%s may not resolve names", w.where)
		for _, s := range uses {
			require.True(t, anywhere[storePort[s]], "%s: no egress to %s on port %d (the overlay's tandem.yaml)", w.where, s, storePort[s])
		}
		sort.Ints(fromIngress)
		if port, ok := public[comp]; ok {
			require.Equal(t, []int{port}, fromIngress, "%s: the ingress controller reaches its listen port only", w.where)
		} else {
			require.Empty(t, fromIngress, "%s is not public", w.where)
		}
	}
}

// hostPort is the port of host:port, or def when there is none.
func hostPort(t *testing.T, addr string, def int) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		require.NotZero(t, def, "%q has no port", addr)
		return def
	}
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

func s3Port(t *testing.T, c schemas.S3Config) int {
	def := 80
	if c.Secure || c.TLS.On() || strings.HasPrefix(c.Endpoint, "https://") {
		def = 443
	}
	return hostPort(t, strings.TrimPrefix(strings.TrimPrefix(c.Endpoint, "https://"), "http://"), def)
}

// checkStoreTLS: every pod mounts the optional Secret tandem-tls read-only
// where the configuration's CA files point; production reaches every
// store over TLS, Kafka with SASL, and its example Secret has the CA keys
// the configuration names.
func checkStoreTLS(t *testing.T, overlay, where string, c corev1.Container, volumes map[string]corev1.Volume, cfg *config.Config) {
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == "/etc/tandem-tls" {
			mount = &c.VolumeMounts[i]
		}
	}
	require.NotNil(t, mount, "%s mounts tandem-tls at /etc/tandem-tls", where)
	require.True(t, mount.ReadOnly, "%s: tandem-tls is mounted read-only", where)
	sv := volumes[mount.Name].Secret
	require.NotNil(t, sv, "%s: /etc/tandem-tls is a Secret", where)
	require.Equal(t, "tandem-tls", sv.SecretName, where)
	require.True(t, sv.Optional != nil && *sv.Optional, "%s: tandem-tls is optional (a deployment without store TLS has none)", where)
	for key, f := range map[string]string{"kafka.tls.ca_file": cfg.Kafka.TLS.CAFile, "clickhouse.tls.ca_file": cfg.ClickHouse.TLS.CAFile, "s3.tls.ca_file": cfg.S3.TLS.CAFile} {
		if f != "" {
			require.True(t, strings.HasPrefix(f, "/etc/tandem-tls/"), "%s: %s %s is not in the mounted Secret", where, key, f)
		}
	}
	if overlay != "prod" {
		return
	}
	require.True(t, cfg.Kafka.TLS.On(), "%s: production reaches Kafka over TLS", where)
	require.Equal(t, schemas.SASLScramSHA512, cfg.Kafka.SASL.Mechanism, where)
	require.NotEmpty(t, cfg.Kafka.SASL.Password, "%s: the Kafka password comes from tandem-secrets", where)
	require.True(t, cfg.ClickHouse.TLS.On(), "%s: production reaches ClickHouse over TLS", where)
	require.True(t, cfg.S3.Secure, "%s: production reaches S3 over HTTPS", where)
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "kubernetes", "overlays", overlay, "tls-secret.example.yaml"))
	require.NoError(t, err)
	ex := decodeStrict(t, "tls-secret.example.yaml", data).obj.(*corev1.Secret)
	require.Equal(t, "tandem-tls", ex.Name)
	for _, f := range []string{cfg.Kafka.TLS.CAFile, cfg.ClickHouse.TLS.CAFile} {
		require.Contains(t, ex.StringData, filepath.Base(f), "tls-secret.example.yaml has the key of %s", f)
	}
}
