package serving_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestBackfilling: a view is answered by the speed layer alone only while
// no run of its stream was ever published. Once one is, a view without a
// run of its configured definition (added later, or its definition
// changed) is backfilling: 503, Retry-After 30, reason "backfilling", and
// state "backfilling" in /v1/views, until its own run is published.
func TestBackfilling(t *testing.T) {
	const added = "pageviews_by_device"
	cfg := loadConfig(t, configYAML(t)+`
  - name: `+added+`
    stream: pageviews
    granularity: 1m
    dimensions: [device]
    measures:
      - { name: views, type: count }
`)
	_, store, _, db := newBackends(t, cfg.Config, false)
	d := genDataset(t, cfg.Config, 300, 5)
	insertSpeed(t, db, d)
	_, url, _ := startService(t, cfg)
	params := func(view string) string {
		c := qcase{gran: "1h", from: base, to: base.Add(4 * time.Hour)}
		return url + "/v1/views/" + view + "/query?" + c.params().Encode()
	}
	backfilling := func(view string) bool {
		code, hdr, body := get(t, params(view), nil)
		if code == http.StatusOK {
			return false
		}
		require.Equal(t, http.StatusServiceUnavailable, code, "%s", body)
		require.Equal(t, "30", hdr.Get("Retry-After"))
		var e struct{ Error, Reason string }
		require.NoError(t, json.Unmarshal(body, &e))
		require.Equal(t, "backfilling", e.Reason, "%s", body)
		require.Contains(t, e.Error, "view "+view+" is backfilling")
		return true
	}
	state := func(view string) string {
		code, _, body := get(t, url+"/v1/views", nil)
		require.Equal(t, http.StatusOK, code)
		var out struct {
			Views []struct{ Name, State string }
		}
		require.NoError(t, json.Unmarshal(body, &out))
		for _, v := range out.Views {
			if v.Name == view {
				return v.State
			}
		}
		t.Fatalf("view %s not listed: %s", view, body)
		return ""
	}

	// A stream without runs: both views answer from the speed layer.
	require.False(t, backfilling(viewName))
	require.False(t, backfilling(added))
	require.Equal(t, "", state(added))

	// A run of the first view: the other one has none and waits for it.
	publish(t, store, cfg.Config, d, "run-1", map[int32]int64{0: 1, 1: 1})
	waitRun(t, url, "run-1")
	require.Eventually(t, func() bool { return backfilling(added) }, 10*time.Second, 50*time.Millisecond)
	require.False(t, backfilling(viewName))
	require.Equal(t, "backfilling", state(added))
	require.Equal(t, "", state(viewName))
	require.Eventually(t, func() bool {
		m := metricsText(t, url)
		return strings.Contains(m, `tandem_serve_view_backfilling{view="`+added+`"} 1`) &&
			strings.Contains(m, `tandem_serve_view_backfilling{view="`+viewName+`"} 0`)
	}, 10*time.Second, 50*time.Millisecond)

	// A run of another definition of it changes nothing.
	v := cfg.View(added)
	other := &schemas.Manifest{View: added, RunID: "run-0", Fingerprint: "00000000000000ff", ChunkSize: cfg.ChunkSize,
		CreatedAt: time.Now().UTC(), Absorbed: map[int32]int64{0: cfg.ChunkSize, 1: cfg.ChunkSize}}
	publishManifest(t, store, other)
	time.Sleep(500 * time.Millisecond) // several manifest polls
	require.True(t, backfilling(added))
	_, _, body := get(t, params(added), nil)
	require.Contains(t, string(body), "its definition changed")

	// A run of its definition computed under another declaration of a
	// field of the stream: still backfilling. A field the run did not know
	// (added since) is no change.
	own := *other
	own.RunID, own.Fingerprint = "run-1", v.Fingerprint()
	own.Fields = v.StreamDef().FieldDecls()
	own.Fields["amount"] = "int64"
	own.Fields["gone"] = "string"
	delete(own.Fields, "device")
	publishManifest(t, store, &own)
	require.Eventually(t, func() bool {
		_, _, body := get(t, params(added), nil)
		return strings.Contains(string(body), "the declaration of field(s) amount of its stream changed")
	}, 10*time.Second, 50*time.Millisecond)
	require.True(t, backfilling(added))

	// Its own run: answered.
	own.Fields = v.StreamDef().FieldDecls()
	delete(own.Fields, "device")
	publishManifest(t, store, &own)
	require.Eventually(t, func() bool { return !backfilling(added) }, 10*time.Second, 50*time.Millisecond)
	require.Equal(t, "", state(added))
	require.Eventually(t, func() bool {
		return strings.Contains(metricsText(t, url), `tandem_serve_view_backfilling{view="`+added+`"} 0`)
	}, 10*time.Second, 50*time.Millisecond)
}
