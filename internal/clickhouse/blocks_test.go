package clickhouse

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestSpeedBlockAppendEqualsCells: a block built from aggregates (the
// speed layer's path, which reads counts, sums, mins and maxes straight
// from the state) holds exactly the columns of a block built from
// Measure.Cell's cells, empty aggregates (NULL min and max, empty
// sketches) included, and a reset block built again holds them too.
func TestSpeedBlockAppendEqualsCells(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	for _, v := range cfg.Views {
		t.Run(v.Name, func(t *testing.T) {
			s := cfg.Stream(v.Stream)
			evs := makeEvents(s, 3000, 3, 21)
			aggs := aggregate(v, evs, cfg.ChunkSize, true, nil)
			type row struct {
				k   rowKey
				agg schemas.Aggregate
			}
			var rows []row
			for k, a := range aggs {
				rows = append(rows, row{k, a})
			}
			// Aggregates of no event, and of events without amount.
			rows = append(rows, row{rowKey{key: schemas.RowKey{WindowMs: t0.UnixMilli(), Dims: schemas.JoinDims(make([]string, len(v.Dimensions)))}}, v.NewAggregate()})
			noAmount := v.NewAggregate()
			for _, e := range evs[:50] {
				ev := e.ev
				ev.Values = append([]schemas.Value(nil), ev.Values...)
				ev.Values[s.FieldIndex("amount")] = schemas.Value{}
				v.Add(noAmount, &ev)
			}
			rows = append(rows, row{rowKey{key: schemas.RowKey{WindowMs: t0.UnixMilli(), Dims: schemas.JoinDims(make([]string, len(v.Dimensions)))}, p: 2, chunk: 7}, noAmount})

			fromAgg := NewSpeedBlock(v, 0)
			fromCells := NewSpeedBlock(v, len(rows))
			for i, r := range rows {
				vr := withStates(v, viewRow(v, r.k.key, r.agg), r.agg)
				require.NoError(t, fromAgg.Append(vr.WindowStart, vr.Dims, r.agg, r.k.p, r.k.chunk, int64(i)))
				require.NoError(t, fromCells.AppendRow(&SpeedRow{ViewRow: vr, Partition: r.k.p, Chunk: r.k.chunk, Version: int64(i)}))
			}
			require.Equal(t, len(rows), fromAgg.Len())
			want := fromCells.columns()
			require.Equal(t, want, fromAgg.columns())

			fromAgg.Reset()
			require.Zero(t, fromAgg.Len())
			for i, r := range rows {
				vr := viewRow(v, r.k.key, r.agg)
				require.NoError(t, fromAgg.Append(vr.WindowStart, vr.Dims, r.agg, r.k.p, r.k.chunk, int64(i)))
			}
			require.Equal(t, want, fromAgg.columns())

			// Refused rows leave the block as it was.
			require.Error(t, fromAgg.Append(t0, make([]string, len(v.Dimensions)+1), v.NewAggregate(), 0, 0, 0))
			require.Error(t, fromAgg.Append(t0, make([]string, len(v.Dimensions)), v.NewAggregate(), -1, 0, 0))
			require.Error(t, fromAgg.Append(t0, make([]string, len(v.Dimensions)), v.NewAggregate()[1:], 0, 0, 0))
			require.Equal(t, want, fromAgg.columns())
		})
	}
}

// TestRawBlockRoundTrip: every field type, set and unset, comes back from
// the raw-events table as it went in (timestamps to the second, what
// 18.16's DateTime keeps), with _raw, _partition and _offset; a block
// reset and filled again writes the new events only.
func TestRawBlockRoundTrip(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	s := cfg.Stream("clicks")
	r := rand.New(rand.NewPCG(3, 4))
	type sent struct {
		ev  schemas.Event
		raw string
	}
	var all []sent
	b := NewRawBlock(s, 0)
	kts := t0.Add(time.Hour)
	for round := 0; round < 2; round++ {
		b.Reset()
		for i := 0; i < 300; i++ {
			vals := make([]schemas.Value, len(s.Fields))
			for fi, f := range s.Fields {
				if r.IntN(4) == 0 {
					continue // NULL
				}
				v := schemas.Value{Set: true}
				switch f.Type {
				case schemas.TypeInt64:
					v.Int = r.Int64N(1<<40) - 1<<39
				case schemas.TypeFloat64:
					v.Float = float64(r.IntN(10000)) / 8
				case schemas.TypeBool:
					v.Bool = r.IntN(2) == 1
				case schemas.TypeTimestamp:
					v.Time = t0.Add(time.Duration(r.IntN(1e6)) * time.Second)
				default:
					v.Str = fmt.Sprintf("s'%d\\\"\x00é", r.IntN(100))
				}
				vals[fi] = v
			}
			n := len(all)
			e := sent{ev: schemas.Event{Values: vals}, raw: fmt.Sprintf(`{"n":%d}`, n)}
			all = append(all, e)
			require.NoError(t, b.Append(&all[n].ev, []byte(e.raw), int32(n%3), int64(n), kts))
		}
		require.Equal(t, 300, b.Len())
		require.NoError(t, db.InsertRawBlock(ctx, b))
	}
	require.Error(t, b.Append(&schemas.Event{}, nil, 0, 0, kts))
	require.Equal(t, 300, b.Len())

	rows, err := db.Conn().Query(ctx, "SELECT id, ts, country, device, user, amount, qty, ok, _raw, _partition, _offset, _kafka_ts FROM tandem.clicks_events FINAL ORDER BY _offset")
	require.NoError(t, err)
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id, country, device, user sql.NullString
		var ts *time.Time
		var amount *float64
		var qty *int64
		var ok *uint8
		var raw string
		var part int32
		var off int64
		var kt time.Time
		require.NoError(t, rows.Scan(&id, &ts, &country, &device, &user, &amount, &qty, &ok, &raw, &part, &off, &kt))
		require.Less(t, n, len(all))
		e := all[n]
		require.EqualValues(t, n, off)
		require.EqualValues(t, n%3, part)
		require.Equal(t, e.raw, raw)
		require.True(t, kt.Equal(kts))
		str := func(name string, got sql.NullString) {
			v := e.ev.Values[s.FieldIndex(name)]
			require.Equal(t, v.Set, got.Valid, name)
			require.Equal(t, v.Str, got.String, name)
		}
		str("id", id)
		str("country", country)
		str("device", device)
		str("user", user)
		if v := e.ev.Values[s.FieldIndex("ts")]; v.Set {
			require.NotNil(t, ts)
			require.True(t, v.Time.Equal(*ts), "%v %v", v.Time, *ts)
		} else {
			require.Nil(t, ts)
		}
		if v := e.ev.Values[s.FieldIndex("amount")]; v.Set {
			require.Equal(t, v.Float, *amount)
		} else {
			require.Nil(t, amount)
		}
		if v := e.ev.Values[s.FieldIndex("qty")]; v.Set {
			require.Equal(t, v.Int, *qty)
		} else {
			require.Nil(t, qty)
		}
		if v := e.ev.Values[s.FieldIndex("ok")]; v.Set {
			require.NotNil(t, ok)
			require.Equal(t, v.Bool, *ok == 1)
		} else {
			require.Nil(t, ok)
		}
		n++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, len(all), n)
}

// TestSpeedResume: the resume point is the highest stored version when the
// view has rows of the partition, else the end of the chunks the CURRENT
// PUBLISHED run absorbed: not a run that is only loaded, not an older run.
func TestSpeedResume(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	db, _ := migrated(t, cfg)
	ctx := testCtx(t)
	v := cfg.View("clicks_by_country")
	other := cfg.View("clicks_total")
	c := cfg.ChunkSize
	resume := func(p int32) int64 {
		o, err := db.SpeedResume(ctx, v, p, c)
		require.NoError(t, err)
		return o
	}
	load := func(runID string, absorbed map[int32]int64) {
		m := &schemas.Manifest{View: v.Name, RunID: runID, ChunkSize: c, Absorbed: absorbed, Files: []schemas.ManifestFile{}}
		_, err := db.LoadBatchRun(ctx, v, BatchLoad{Manifest: m})
		require.NoError(t, err)
	}

	require.EqualValues(t, -1, resume(0), "nothing stored, nothing absorbed")

	// Loaded, not published: does not count.
	load("r1", map[int32]int64{0: 3 * c, 1: c})
	require.EqualValues(t, -1, resume(0))
	require.NoError(t, db.PublishRun(ctx, v, "r1", time.Time{}))
	require.EqualValues(t, 3*c-1, resume(0))
	require.EqualValues(t, c-1, resume(1))
	require.EqualValues(t, -1, resume(2), "a partition the run did not absorb")
	o, err := db.SpeedResume(ctx, other, 0, c)
	require.NoError(t, err)
	require.EqualValues(t, -1, o, "another view's run does not count")

	// A newer run loaded but not published: still r1's chunks.
	load("r2", map[int32]int64{0: 5 * c, 1: 2 * c, 2: c})
	require.EqualValues(t, 3*c-1, resume(0))
	require.EqualValues(t, -1, resume(2))

	// Speed rows win over absorbed chunks, below or above them.
	row := func(p int32, chunk, version int64) SpeedRow {
		return SpeedRow{ViewRow: viewRow(v, schemas.RowKey{WindowMs: t0.UnixMilli(), Dims: schemas.JoinDims([]string{"US", "web"})}, v.NewAggregate()),
			Partition: p, Chunk: chunk, Version: version}
	}
	require.NoError(t, db.InsertSpeedRows(ctx, v, []SpeedRow{row(0, 1, c+5), row(1, 4, 4*c+17), row(1, 3, 3*c+1)}))
	require.EqualValues(t, c+5, resume(0))
	require.EqualValues(t, 4*c+17, resume(1))
	require.EqualValues(t, -1, resume(2))

	// Publishing r2 moves the fallback; rows still win.
	require.NoError(t, db.PublishRun(ctx, v, "r2", time.Time{}))
	require.EqualValues(t, c-1, resume(2))
	require.EqualValues(t, c+5, resume(0))
	require.NoError(t, db.DeleteAbsorbedSpeedRows(ctx, v, map[int32]int64{0: 3}))
	require.EqualValues(t, 5*c-1, resume(0), "rows deleted after absorption: the current run's chunks")

	// Publishing the older run again (a rollback) makes its chunks count.
	require.NoError(t, db.PublishRun(ctx, v, "r1", time.Time{}))
	require.EqualValues(t, 3*c-1, resume(0))
	require.EqualValues(t, -1, resume(2))

	_, err = db.SpeedResume(ctx, v, -1, c)
	require.Error(t, err)
	_, err = db.SpeedResume(ctx, v, 0, 0)
	require.Error(t, err)
}

// TestSpeedBlockAppendAllocatesNothing: appending a row of exact measures
// (and empty sketches) to a block with room reads each cell through its
// measure's kind without allocating: the per-row dispatch costs a call,
// not garbage.
func TestSpeedBlockAppendAllocatesNothing(t *testing.T) {
	cfg := parseConfig(t, testConfigYAML)
	for _, v := range cfg.Views {
		agg := v.NewAggregate()
		for i := range v.Measures {
			if v.Measures[i].Kind().Exact {
				agg[i] = schemas.State{N: 3, Sum: 1.5, Min: -2, Max: 7}
			}
		}
		dims := make([]string, len(v.Dimensions))
		b := NewSpeedBlock(v, 1000)
		window := t0
		allocs := testing.AllocsPerRun(500, func() {
			require.NoError(t, b.Append(window, dims, agg, 1, 2, 3))
		})
		require.Zero(t, allocs, v.Name)
	}
}
