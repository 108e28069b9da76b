package serving_test

import (
	"context"
	"math"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/serving"
)

// TestClickHouseSpeedExact checks the speed source on its own, over the
// adapter on a real ClickHouse, against counts and maxima computed directly
// from the events: exact window bounds, sub-second ones included (a window
// that starts before a sub-second `from` is left out, one that starts
// before a sub-second `to` is kept), the chunk seam, filters and measure
// subsets.
func TestClickHouseSpeedExact(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, db := migratedClickHouse(ctx, t)
	src, err := serving.NewClickHouseSpeed(db)
	require.NoError(t, err)
	_, err = serving.NewClickHouseSpeed(nil)
	require.Error(t, err)

	d := genDataset(t, cfg, 2000, 5)
	insertSpeed(t, db, d)
	v := d.view
	s := v.StreamDef()
	fCountry, fDevice, fLatency := s.FieldIndex("country"), s.FieldIndex("device"), s.FieldIndex("latency_ms")
	chunks := d.chunks()
	seam := map[int32]int64{0: chunks[0] / 2, 1: 1}

	type cell struct {
		n     int64
		maxLt float64
		hasLt bool
	}
	for _, tc := range []struct {
		name     string
		from, to time.Time
		absorbed map[int32]int64
		filters  map[string][]string // dim -> values
		measures string
		none     bool // the truth has no rows
	}{
		{name: "sub-second from", from: base.Add(17*time.Minute + 500*time.Millisecond), to: base.Add(40 * time.Minute)},
		{name: "a millisecond past a window start", from: base.Add(121*time.Minute + time.Millisecond), to: base.Add(130 * time.Minute)},
		{name: "sub-second to keeps the window before it", from: base.Add(10 * time.Minute), to: base.Add(20*time.Minute + 250*time.Millisecond)},
		{name: "seam, filters and a measure subset", from: base.Add(-time.Hour + 999*time.Millisecond), to: base.Add(5*time.Hour + 1), absorbed: seam,
			filters: map[string][]string{"country": {"US", ""}, "device": {"tablet"}}, measures: "max_latency,views"},
		{name: "filter value with quotes", from: base, to: base.Add(4 * time.Hour), filters: map[string][]string{"country": {"US' OR '1'='1"}}, none: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params := url.Values{"from": {tc.from.Format(time.RFC3339Nano)}, "to": {tc.to.Format(time.RFC3339Nano)}}
			for dim, vals := range tc.filters {
				for _, val := range vals {
					params.Add("filter", dim+":"+val)
				}
			}
			if tc.measures != "" {
				params.Set("measures", tc.measures)
			}
			q, err := serving.ParseQuery(v, params.Encode(), 30*24*time.Hour)
			require.NoError(t, err)

			// The truth, from the events alone.
			want := map[string]cell{}
			for _, e := range d.events {
				if e.offset/d.chunk < tc.absorbed[e.partition] {
					continue
				}
				w := e.ev.Time.Truncate(time.Minute)
				if w.Before(tc.from) || !w.Before(tc.to) {
					continue
				}
				country, device := e.ev.Values[fCountry].Str, e.ev.Values[fDevice].Str
				if vals, ok := tc.filters["country"]; ok && !contains(vals, country) {
					continue
				}
				if vals, ok := tc.filters["device"]; ok && !contains(vals, device) {
					continue
				}
				k := w.UTC().Format(time.RFC3339) + "|" + country + "|" + device
				c := want[k]
				c.n++
				if lt := e.ev.Values[fLatency]; lt.Set {
					c.maxLt = math.Max(c.maxLt, lt.Float)
					if !c.hasLt {
						c.maxLt, c.hasLt = lt.Float, true
					}
				}
				want[k] = c
			}

			require.Equal(t, tc.none, len(want) == 0, "the case should select rows")
			got := map[string]cell{}
			mViews, mMax := v.MeasureIndex("views"), v.MeasureIndex("max_latency")
			require.NoError(t, src.ScanSpeed(ctx, q, tc.absorbed, func(r *serving.Row) error {
				k := time.UnixMilli(r.WindowMs).UTC().Format(time.RFC3339) + "|" + strings.Join(r.Dims, "|")
				c := got[k] // rows of several chunks add up
				c.n += r.States[mViews].N
				if st := r.States[mMax]; st.N > 0 {
					if !c.hasLt || st.Max > c.maxLt {
						c.maxLt = st.Max
					}
					c.hasLt = true
				}
				got[k] = c
				if tc.measures != "" {
					require.Zero(t, r.States[v.MeasureIndex("revenue")], "revenue was not asked for")
				}
				return nil
			}))
			require.Equal(t, want, got)
		})
	}

	mw, err := src.MaxWindow(ctx, v, seam)
	require.NoError(t, err)
	var last time.Time
	for _, e := range d.events {
		if w := e.ev.Time.Truncate(time.Minute); e.offset/d.chunk >= seam[e.partition] && w.After(last) {
			last = w
		}
	}
	require.Equal(t, last.UTC(), mw)
}

func contains(vals []string, s string) bool {
	for _, v := range vals {
		if v == s {
			return true
		}
	}
	return false
}
