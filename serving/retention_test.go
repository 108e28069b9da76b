package serving_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// retentionRefusal asks a query from `from` and returns the 400's
// retained_from, failing on any other answer.
func retentionRefusal(t *testing.T, url string, from, to time.Time) (string, string) {
	t.Helper()
	code, _, body := get(t, queryURL(url, qcase{from: from, to: to}.params()), nil)
	require.Equal(t, http.StatusBadRequest, code, "body: %s", body)
	var e struct {
		Error        string `json:"error"`
		RetainedFrom string `json:"retained_from"`
	}
	require.NoError(t, json.Unmarshal(body, &e))
	require.Contains(t, e.Error, "views[].retention")
	return e.RetainedFrom, e.Error
}

// TestRetentionAnswers: a run whose views[].retention dropped the first
// day answers every range inside the retained one exactly (batch rows ⊕
// speed rows, against the truth computed from the events), and refuses
// (400, retained_from) a range reaching before it — even where late speed
// rows of the dropped day are still in ClickHouse. Before the first run,
// the configured retention says where the view starts.
func TestRetentionAnswers(t *testing.T) {
	e := newEnv(t, true)
	d := genDataset(t, e.cfg, 2000, 3)
	end := base.Add(4 * time.Hour)
	retained := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC) // base is 22:00 the day before

	// No run yet: the configured retention (7 days back from now, long
	// after this data) refuses the range.
	e.view.Retention = schemas.Duration(7 * schemas.Day)
	got, _ := retentionRefusal(t, e.url, base, end)
	require.Equal(t, e.view.RetainedFrom(time.Now()).Format(time.RFC3339), got)
	e.view.Retention = 0

	// Speed rows of every chunk, the first day's included; the run absorbs
	// half of each partition and keeps the second day only.
	insertSpeed(t, e.db, d)
	chunks := d.chunks()
	m := writeRun(t, e.store, e.cfg, d, "run-retained", map[int32]int64{0: chunks[0] / 2, 1: chunks[1] / 2})
	var files []schemas.ManifestFile
	m.Rows = 0
	for _, f := range m.Files {
		if !f.Day.Before(retained) {
			files = append(files, f)
			m.Rows += f.Rows
		}
	}
	require.Less(t, len(files), len(m.Files), "the run had a day to drop")
	m.Files, m.RetainedFrom = files, &retained
	publishManifest(t, e.store, m)
	require.Eventually(t, func() bool {
		a := query(t, e.url, qcase{from: retained, to: end}.params())
		return a.Freshness.BatchRun != nil && *a.Freshness.BatchRun == m.RunID
	}, 5*time.Second, 20*time.Millisecond)

	for _, c := range []qcase{
		{name: "view granularity", from: retained, to: end},
		{name: "1h by country", gran: "1h", groupBy: []string{"country"}, from: retained, to: end},
		{name: "all by device", gran: "all", groupBy: []string{"device"}, from: retained.Add(17 * time.Minute), to: end},
		{name: "ragged", gran: "5m", from: retained.Add(time.Minute), to: retained.Add(95 * time.Minute)},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := c.truth(d, nil)
			require.NotEmpty(t, want)
			checkAnswer(t, query(t, e.url, c.params()).Rows, want, c.groupBy, allMeasures)
		})
	}
	// GET /v1/views names the start too.
	code, _, body := get(t, e.url+"/v1/views", nil)
	require.Equal(t, http.StatusOK, code)
	var list struct {
		Views []struct {
			Name         string `json:"name"`
			RetainedFrom string `json:"retained_from"`
		} `json:"views"`
	}
	require.NoError(t, json.Unmarshal(body, &list))
	for _, v := range list.Views {
		if v.Name == viewName {
			require.Equal(t, "2026-11-21T00:00:00Z", v.RetainedFrom)
		} else {
			require.Empty(t, v.RetainedFrom, v.Name)
		}
	}

	for _, from := range []time.Time{base, retained.Add(-time.Millisecond)} {
		got, msg := retentionRefusal(t, e.url, from, end)
		require.Equal(t, "2026-11-21T00:00:00Z", got)
		require.Contains(t, msg, "ask from 2026-11-21T00:00:00Z or later")
	}
}
