package serving_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/batch"
	"github.com/tandem-analytics/tandem/internal/clickhouse"
	"github.com/tandem-analytics/tandem/schemas"
	"github.com/tandem-analytics/tandem/serving"
)

// TestEveryMeasureKind runs a measure of every registered kind — the test-
// only present type (measure_present_test.go) among them — through every
// path a measure takes: validation, the ClickHouse DDL (speed, batch and
// levels tables, merged views), the speed layer's block into ClickHouse
// and back, a real batch run (fold, SQL states, Parquet files, ClickHouse
// load), serving's merge of batch and speed rows, and the JSON, CSV and
// Arrow answers. Each answer is held to the kind's own fold of the same
// events: exact kinds exactly (sums to float rounding), sketches within
// twice their stated bound of the sketch of all events.
func TestEveryMeasureKind(t *testing.T) {
	ctx := context.Background()
	kinds := schemas.MeasureKinds()
	require.NotNil(t, schemas.KindOf("present"), "the test-only kind is registered")
	var lines []string
	for _, k := range kinds {
		line := fmt.Sprintf("      - { name: k_%s, type: %s", k.Type, k.Type)
		switch k.Field {
		case schemas.FieldNumeric:
			line += ", field: latency_ms" // missing for some events, and for all of country XX
		case schemas.FieldAny:
			line += ", field: user_id"
		}
		lines = append(lines, line+" }")
	}
	const anchor = "      - { name: views,       type: count }\n"
	yaml := configYAML(t)
	require.Contains(t, yaml, anchor)
	yaml = strings.Replace(yaml, anchor, anchor+strings.Join(lines, "\n")+"\n", 1)
	cfg := loadConfig(t, yaml)
	v := cfg.View(viewName)
	_, store, _, db := newBackends(t, cfg.Config, false) // the DDL of every kind
	d := genDataset(t, cfg.Config, 3000, 77)

	// Speed: every chunk's rows through a SpeedBlock, as the speed layer
	// writes them, and read back cell for cell.
	type rowID struct {
		key   schemas.RowKey
		p     int32
		chunk int64
	}
	byChunk := map[rowID][]event{}
	for _, e := range d.events {
		id := rowID{p: e.partition, chunk: schemas.ChunkOf(e.offset, d.chunk)}
		byChunk[id] = append(byChunk[id], e)
	}
	written := map[rowID][]any{}
	block := clickhouse.NewSpeedBlock(v, 0)
	for id, evs := range byChunk {
		var version int64
		for _, e := range evs {
			version = max(version, e.offset)
		}
		for rk, agg := range aggregate(v, evs) {
			dims := splitDims(t, v, rk.Dims)
			require.NoError(t, block.Append(rk.Window(), dims, agg, id.p, id.chunk, version))
			written[rowID{rk, id.p, id.chunk}] = cellsOf(v, agg)
		}
	}
	require.NoError(t, db.InsertSpeedBlock(ctx, block))
	read := 0
	require.NoError(t, db.SelectSpeedRows(ctx, v, time.Time{}, time.Time{}, nil, func(r clickhouse.SpeedRow) error {
		want, ok := written[rowID{schemas.RowKey{WindowMs: r.WindowStart.UnixMilli(), Dims: schemas.JoinDims(r.Dims)}, r.Partition, r.Chunk}]
		require.True(t, ok, "speed row %v %v %d/%d was not written", r.WindowStart, r.Dims, r.Partition, r.Chunk)
		for i := range v.Measures {
			m := &v.Measures[i]
			st, err := m.StateFromCell(r.Cells[i])
			require.NoError(t, err, m.Name)
			require.Equal(t, want[i], m.Cell(&st), "speed row %v %v: %s", r.WindowStart, r.Dims, m.Name)
		}
		read++
		return nil
	}))
	require.Equal(t, len(written), read, "speed rows read back")

	// Batch: a real run over the raw files of the first half of each
	// partition's chunks, loaded into ClickHouse.
	absorbed := d.halfChunks()
	raw := &dataset{view: v, chunk: d.chunk, next: map[int32]int64{}}
	for _, e := range d.events {
		if e.offset < absorbed[e.partition]*cfg.ChunkSize {
			raw.events = append(raw.events, e)
		}
	}
	writeRaw(t, cfg.Config, store, raw, base.Add(5*time.Hour))
	runCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	bc, err := batch.ConfigFrom(cfg.Config)
	require.NoError(t, err)
	bc.TempDir = t.TempDir()
	runner, err := batch.New(bc, batch.Deps{Schema: cfg.Config, Store: store, ClickHouse: db,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	res, err := runner.Run(runCtx)
	require.NoError(t, err)
	man := res.Views[0].Manifest
	require.EqualValues(t, len(raw.events), man.Events)
	for p, k := range absorbed {
		require.Equal(t, k*cfg.ChunkSize, man.Absorbed[p], "partition %d", p)
	}

	// The merged SQL views, base and levels: the exact kinds merged by
	// their SQLMerge.
	checkMergedView(t, db, clickhouse.MergedView(v.Name), v, v.Granularity, d)
	require.NotEmpty(t, v.Levels())
	for _, l := range v.Levels() {
		checkMergedView(t, db, clickhouse.LevelView(v.Name, l), v, l, d)
	}

	// Serving: batch and speed merged, in every format.
	_, url, _ := startService(t, cfg)
	waitRun(t, url, man.RunID)
	for _, c := range []struct {
		gran    string
		groupBy string
		from    time.Time
		to      time.Time
		limit   int // top N by k_present (the test-only kind), which ClickHouse computes
	}{
		{"1h", "country", base, base.Add(4 * time.Hour), 0},
		{"all", "device", base.Add(7 * time.Minute), base.Add(3 * time.Hour), 0},
		{"1h", "country", base, base.Add(4 * time.Hour), 2},
	} {
		name := c.gran + " by " + c.groupBy
		if c.limit > 0 {
			name += fmt.Sprintf(", top %d by k_present", c.limit)
		}
		t.Run(name, func(t *testing.T) {
			want := kindTruth(v, d, c.from, c.to, c.gran, c.groupBy)
			p := urlValues("from", c.from.Format(time.RFC3339), "to", c.to.Format(time.RFC3339), "granularity", c.gran, "group_by", c.groupBy)
			if c.limit > 0 {
				p.Set("order_by", "k_present")
				p.Set("limit", strconv.Itoa(c.limit))
				want = topN(want, v.MeasureIndex("k_present"), c.limit)
				defer func() {
					require.Contains(t, metricsText(t, url), `tandem_serve_topn_total{path="clickhouse",view="`+viewName+`"} 3`,
						"the top N was computed in ClickHouse, for each format")
				}()
			}
			got := map[string]map[string][]*float64{}
			for _, r := range query(t, url, p).Rows {
				got[r.WindowStart.UTC().Format(time.RFC3339)+"|"+r.Dimensions[c.groupBy]] = jsonParts(t, v, r.Measures)
			}
			checkKindAnswer(t, "json", v, want, got)
			checkKindAnswer(t, "csv", v, want, csvParts(t, v, url, p, c.groupBy))
			checkKindAnswer(t, "arrow", v, want, arrowParts(t, v, url, p, c.groupBy))
		})
	}
}

// topN keeps, per bucket, the n groups of the highest measure mi (its one
// part), ties broken by the group value, as serving ranks them.
func topN(groups map[string][][]*float64, mi, n int) map[string][][]*float64 {
	byBucket := map[string][]string{}
	for key := range groups {
		bucket, _, _ := strings.Cut(key, "|")
		byBucket[bucket] = append(byBucket[bucket], key)
	}
	out := map[string][][]*float64{}
	for _, keys := range byBucket {
		sort.Slice(keys, func(i, j int) bool {
			a, b := *groups[keys[i]][mi][0], *groups[keys[j]][mi][0]
			if a != b {
				return a > b
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys[:min(n, len(keys))] {
			out[k] = groups[k]
		}
	}
	return out
}

func urlValues(kv ...string) url.Values {
	p := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		p.Set(kv[i], kv[i+1])
	}
	return p
}

func splitDims(t testing.TB, v *schemas.View, joined string) []string {
	t.Helper()
	dims, err := schemas.SplitDims(joined)
	require.NoError(t, err)
	for len(dims) < len(v.Dimensions) {
		dims = append(dims, "") // SplitDims of trailing empty values
	}
	return dims
}

// resultParts flattens an answer of any ResultShape into its numbers, as
// the flat formats show them: one part, or p50, p90 and p99; nil for null.
func resultParts(res any) []*float64 {
	f := func(x float64) *float64 { return &x }
	switch r := res.(type) {
	case int64:
		return []*float64{f(float64(r))}
	case uint64:
		return []*float64{f(float64(r))}
	case float64:
		return []*float64{f(r)}
	case *float64:
		return []*float64{r}
	case *schemas.Quantiles:
		if r == nil {
			return []*float64{nil, nil, nil}
		}
		return []*float64{f(r.P50), f(r.P90), f(r.P99)}
	}
	panic(fmt.Sprintf("result of type %T", res))
}

// partNames are the flat column names of a measure (ArrowSchema's,
// CSV's header).
func partNames(m *schemas.Measure) []string {
	if m.Kind().Result == schemas.ResultQuantiles {
		return []string{m.Name + "_p50", m.Name + "_p90", m.Name + "_p99"}
	}
	return []string{m.Name}
}

// kindTruth folds the events of [from, to) into buckets of gran (or one
// bucket, "all") and groups of groupBy with View.Add, and returns each
// group's answers as parts, keyed by bucket start and group value.
func kindTruth(v *schemas.View, d *dataset, from, to time.Time, gran, groupBy string) map[string][][]*float64 {
	s := v.StreamDef()
	aggs := map[string]schemas.Aggregate{}
	for i := range d.events {
		ev := &d.events[i].ev
		w := ev.Time.Truncate(v.Granularity.D())
		if w.Before(from) || !w.Before(to) {
			continue
		}
		bucket := from
		if gran != "all" {
			g, err := schemas.ParseGranularity(gran)
			if err != nil {
				panic(err)
			}
			bucket = w.Truncate(g.D())
		}
		key := bucket.UTC().Format(time.RFC3339) + "|" + ev.Values[s.FieldIndex(groupBy)].Str
		if aggs[key] == nil {
			aggs[key] = v.NewAggregate()
		}
		v.Add(aggs[key], ev)
	}
	out := map[string][][]*float64{}
	for key, a := range aggs {
		for i := range v.Measures {
			out[key] = append(out[key], resultParts(v.Measures[i].Result(&a[i])))
		}
	}
	return out
}

func jsonParts(t testing.TB, v *schemas.View, ms map[string]json.RawMessage) map[string][]*float64 {
	t.Helper()
	out := map[string][]*float64{}
	for i := range v.Measures {
		m := &v.Measures[i]
		raw, ok := ms[m.Name]
		require.True(t, ok, "json answer lacks %s", m.Name)
		if m.Kind().Result == schemas.ResultQuantiles {
			var q *struct{ P50, P90, P99 *float64 }
			require.NoError(t, json.Unmarshal(raw, &q), "%s: %s", m.Name, raw)
			if q == nil {
				out[m.Name] = []*float64{nil, nil, nil}
			} else {
				out[m.Name] = []*float64{q.P50, q.P90, q.P99}
			}
			continue
		}
		var f *float64
		require.NoError(t, json.Unmarshal(raw, &f), "%s: %s", m.Name, raw)
		out[m.Name] = []*float64{f}
	}
	return out
}

func csvParts(t testing.TB, v *schemas.View, base string, p url.Values, groupBy string) map[string]map[string][]*float64 {
	t.Helper()
	code, _, body := get(t, queryURL(base, p), map[string]string{"Accept": "text/csv"})
	require.Equal(t, http.StatusOK, code, "%s", body)
	recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	require.NoError(t, err)
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	out := map[string]map[string][]*float64{}
	for _, rec := range recs[1:] {
		ws, err := time.Parse(time.RFC3339Nano, rec[col[schemas.ColWindowStart]])
		require.NoError(t, err)
		ms := map[string][]*float64{}
		for i := range v.Measures {
			for _, name := range partNames(&v.Measures[i]) {
				at, ok := col[name]
				require.True(t, ok, "csv header lacks %s: %v", name, recs[0])
				var part *float64
				if rec[at] != "" {
					f, err := strconv.ParseFloat(rec[at], 64)
					require.NoError(t, err, "%s: %q", name, rec[at])
					part = &f
				}
				ms[v.Measures[i].Name] = append(ms[v.Measures[i].Name], part)
			}
		}
		out[ws.UTC().Format(time.RFC3339)+"|"+rec[col[groupBy]]] = ms
	}
	return out
}

func arrowParts(t testing.TB, v *schemas.View, base string, p url.Values, groupBy string) map[string]map[string][]*float64 {
	t.Helper()
	code, _, body := get(t, queryURL(base, p), map[string]string{"Accept": serving.ContentArrow})
	require.Equal(t, http.StatusOK, code, "%s", body)
	rd, err := ipc.NewReader(bytes.NewReader(body))
	require.NoError(t, err)
	defer rd.Release()
	out := map[string]map[string][]*float64{}
	for rd.Next() {
		rec := rd.RecordBatch()
		col := func(name string) int {
			idx := rec.Schema().FieldIndices(name)
			require.Len(t, idx, 1, "arrow column %s", name)
			return idx[0]
		}
		ws := rec.Column(col(schemas.ColWindowStart)).(*array.Timestamp)
		gs := rec.Column(col(groupBy)).(*array.String)
		for row := 0; row < int(rec.NumRows()); row++ {
			ms := map[string][]*float64{}
			for i := range v.Measures {
				for _, name := range partNames(&v.Measures[i]) {
					var part *float64
					switch a := rec.Column(col(name)).(type) {
					case *array.Int64:
						f := float64(a.Value(row))
						part = &f
					case *array.Uint64:
						f := float64(a.Value(row))
						part = &f
					case *array.Float64:
						if !a.IsNull(row) {
							f := a.Value(row)
							part = &f
						}
					default:
						t.Fatalf("arrow column %s is %T", name, a)
					}
					ms[v.Measures[i].Name] = append(ms[v.Measures[i].Name], part)
				}
			}
			out[time.UnixMilli(int64(ws.Value(row))).UTC().Format(time.RFC3339)+"|"+gs.Value(row)] = ms
		}
	}
	require.NoError(t, rd.Err())
	return out
}

// checkKindAnswer holds every group's measures to the truth: exact kinds
// exactly (sums within float rounding of another order), a distinct sketch
// within twice DistinctBound and quantiles within twice the relative
// accuracy of the answer of the sketch of all events.
func checkKindAnswer(t testing.TB, format string, v *schemas.View, want map[string][][]*float64, got map[string]map[string][]*float64) {
	t.Helper()
	require.Len(t, got, len(want), "%s: groups", format)
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		g, ok := got[key]
		require.True(t, ok, "%s: group %s missing", format, key)
		for i := range v.Measures {
			m := &v.Measures[i]
			k := m.Kind()
			w, a := want[key][i], g[m.Name]
			require.Len(t, a, len(w), "%s %s %s: parts", format, key, m.Name)
			for j := range w {
				where := fmt.Sprintf("%s %s %s part %d", format, key, m.Name, j)
				if w[j] == nil || a[j] == nil {
					require.Equal(t, w[j] == nil, a[j] == nil, "%s: null", where)
					continue
				}
				want, got := *w[j], *a[j]
				switch {
				case k.Exact:
					require.InDelta(t, want, got, 1e-9*math.Max(1, math.Abs(want)), where)
				case k.Sketch == schemas.SketchHLL:
					require.InDelta(t, want, got, 2*schemas.DistinctBound(want), where)
				default:
					require.InDelta(t, want, got, 2*schemas.QuantileRelativeAccuracy*math.Abs(want)+1e-9, where)
				}
			}
		}
	}
}

// checkMergedView reads a merged SQL view of windows gran (batch rows of
// the current run and the speed rows it did not absorb) and holds each
// exact measure, read back through its kind's cell, to the fold of every
// event of its row.
func checkMergedView(t testing.TB, db *clickhouse.DB, sqlView string, v *schemas.View, gran schemas.Granularity, d *dataset) {
	t.Helper()
	var exact []int
	cols := []string{"toInt64(toUnixTimestamp(window_start))"}
	cols = append(cols, v.Dimensions...)
	for i := range v.Measures {
		if v.Measures[i].Kind().Exact {
			exact = append(exact, i)
			cols = append(cols, v.Measures[i].Name)
		}
	}
	rows, err := db.Conn().Query(context.Background(), fmt.Sprintf("SELECT %s FROM %s.%s", strings.Join(cols, ", "), db.Database(), sqlView))
	require.NoError(t, err)
	defer rows.Close()
	truth := map[schemas.RowKey]schemas.Aggregate{}
	for i := range d.events {
		ev := &d.events[i].ev
		k := v.Key(ev)
		k.WindowMs = gran.WindowStartMs(k.WindowMs)
		if truth[k] == nil {
			truth[k] = v.NewAggregate()
		}
		v.Add(truth[k], ev)
	}
	n := 0
	for rows.Next() {
		var window int64
		dims := make([]string, len(v.Dimensions))
		dest := []any{&window}
		for i := range dims {
			dest = append(dest, &dims[i])
		}
		ints, floats, nulls := make([]int64, len(exact)), make([]float64, len(exact)), make([]*float64, len(exact))
		for j, i := range exact {
			switch v.Measures[i].Kind().Cell {
			case schemas.CellInt64:
				dest = append(dest, &ints[j])
			case schemas.CellFloat64:
				dest = append(dest, &floats[j])
			default:
				dest = append(dest, &nulls[j])
			}
		}
		require.NoError(t, rows.Scan(dest...))
		key := schemas.RowKey{WindowMs: window * 1000, Dims: schemas.JoinDims(dims)}
		want, ok := truth[key]
		require.True(t, ok, "%s row %v has no events", sqlView, key)
		for j, i := range exact {
			m := &v.Measures[i]
			var cell any
			switch m.Kind().Cell {
			case schemas.CellInt64:
				cell = ints[j]
			case schemas.CellFloat64:
				cell = floats[j]
			default:
				cell = nulls[j]
			}
			st, err := m.StateFromCell(cell)
			require.NoError(t, err)
			w := resultParts(m.Result(&want[i]))[0]
			g := resultParts(m.Result(&st))[0]
			if w == nil || g == nil {
				require.Equal(t, w == nil, g == nil, "%s %v %s: null", sqlView, key, m.Name)
				continue
			}
			require.InDelta(t, *w, *g, 1e-9*math.Max(1, math.Abs(*w)), "%s %v %s", sqlView, key, m.Name)
		}
		n++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, len(truth), n, "%s rows", sqlView)
}
