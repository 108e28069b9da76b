package batch

import (
	"context"
	"encoding/binary"
	"fmt"
	"iter"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

// dayRows is one view's rows of one UTC day, sorted by window, then
// dimension values.
type dayRows struct {
	keys []schemas.RowKey
	aggs []schemas.Aggregate
}

// foldBatch is a block of a day's records on their way from the reader to
// the fold shards, with each record's row in each view.
type foldBatch struct {
	recs []Record
	rows []int32 // [i*len(views)+v]: row of recs[i] in views[v]
	n    int
	// left counts the shards that have not folded the batch yet; the last
	// one returns it to the reader.
	left atomic.Int32
}

// aggregateDay folds every kept event of day into rows of each view, with
// the shared row key (View.Key's parts, WindowStartMs and AppendDims) and
// a schemas.Fold per row (View.Add's aggregate, the speed layer's, faster
// for distinct measures). A day is the unit of memory: its rows, never the
// whole dataset.
//
// The fold is split by row over shards goroutines. One goroutine reads
// and decodes the day's spill in readDay's (partition, offset) order,
// computes each record's row key once per view and numbers the rows as
// they first appear; row r belongs to shard r%shards. Every shard walks
// every batch in that order and folds only its own rows, so each row sees
// its events in (partition, offset) order whatever the number of shards,
// and the rows (float sums and sketch encodings depend on the order) are
// the same bytes as a one-goroutine fold's. Rows are numbered round robin
// in order of appearance, so shards get nearly equal numbers of rows. A
// view without dimensions has one row per day, on one shard.
func aggregateDay(sp *spillDir, day int64, partitions int, views []*schemas.View, shards int) ([]dayRows, error) {
	const size, batches = 256, 8
	shards = max(shards, 1)
	nv := len(views)
	// The reader's: row numbers by key bytes (the window start, 8 bytes,
	// then View.AppendDims: a lookup allocates nothing), and the row keys
	// by row number.
	ids := make([]map[string]int32, nv)
	keys := make([][]schemas.RowKey, nv)
	for i := range ids {
		ids[i] = map[string]int32{}
	}
	var kb []byte
	free := make(chan *foldBatch, batches)
	for i := 0; i < batches; i++ {
		free <- &foldBatch{recs: make([]Record, size), rows: make([]int32, size*nv)}
	}
	in := make([]chan *foldBatch, shards)
	folds := make([][][]*schemas.Fold, shards) // [shard][view][row/shards]
	var wg sync.WaitGroup
	for s := range in {
		in[s] = make(chan *foldBatch, batches)
		folds[s] = make([][]*schemas.Fold, nv)
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := folds[s]
			for b := range in[s] {
				for i := 0; i < b.n; i++ {
					ev := &b.recs[i].Event
					for v, view := range views {
						r := int(b.rows[i*nv+v])
						if r%shards != s {
							continue
						}
						r /= shards
						for len(mine[v]) <= r { // rows appear in order
							mine[v] = append(mine[v], view.NewFold())
						}
						mine[v][r].Add(ev)
					}
				}
				if b.left.Add(-1) == 0 {
					free <- b // room: at most batches exist
				}
			}
		}()
	}
	send := func(b *foldBatch) {
		b.left.Store(int32(shards))
		for _, c := range in {
			c <- b // room: at most batches exist
		}
	}
	b := <-free
	b.n = 0
	err := sp.scanDay(day, partitions, func() *Record { return &b.recs[b.n] }, func(r *Record) error {
		ms := r.Event.Time.UnixMilli()
		for v, view := range views {
			w := view.Granularity.WindowStartMs(ms)
			kb = view.AppendDims(binary.BigEndian.AppendUint64(kb[:0], uint64(w)), &r.Event)
			id, ok := ids[v][string(kb)]
			if !ok {
				id = int32(len(keys[v]))
				k := string(kb)
				ids[v][k] = id
				keys[v] = append(keys[v], schemas.RowKey{WindowMs: w, Dims: k[8:]})
			}
			b.rows[b.n*nv+v] = id
		}
		if b.n++; b.n == size {
			send(b)
			b = <-free
			b.n = 0
		}
		return nil
	})
	if err == nil && b.n > 0 {
		send(b)
	}
	for _, c := range in {
		close(c)
	}
	wg.Wait()
	if err != nil {
		return nil, err
	}

	out := make([]dayRows, nv)
	for v, ks := range keys {
		type row struct {
			key schemas.RowKey
			id  int32
		}
		rows := make([]row, len(ks))
		for id, k := range ks {
			rows[id] = row{k, int32(id)}
		}
		sort.Slice(rows, func(a, b int) bool {
			if rows[a].key.WindowMs != rows[b].key.WindowMs {
				return rows[a].key.WindowMs < rows[b].key.WindowMs
			}
			return rows[a].key.Dims < rows[b].key.Dims
		})
		dr := dayRows{keys: make([]schemas.RowKey, len(rows)), aggs: make([]schemas.Aggregate, len(rows))}
		for j, r := range rows {
			dr.keys[j] = r.key
			dr.aggs[j] = folds[int(r.id)%shards][v][int(r.id)/shards].Aggregate()
		}
		out[v] = dr
	}
	return out, nil
}

// writeDayFile writes rows to a local Parquet file and uploads it to key.
func writeDayFile(ctx context.Context, st objstore.Bucket, tmp string, v *schemas.View, key string, day int64, rows dayRows) (schemas.ManifestFile, error) {
	mf := schemas.ManifestFile{Key: key, Day: DayTime(day), Rows: int64(len(rows.keys))}
	f, err := os.CreateTemp(tmp, "view-*.parquet")
	if err != nil {
		return mf, fmt.Errorf("batch: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	w := parquet.NewViewWriter(f, v, parquet.ViewWriterOptions{RowGroupRows: 64 << 10})
	cells := make([]any, len(v.Measures))
	states := make([][]byte, len(v.Measures))
	for i, k := range rows.keys {
		dims, err := schemas.SplitDims(k.Dims)
		if err != nil {
			return mf, fmt.Errorf("batch: row key of %s: %w", v.Name, err)
		}
		if len(dims) == 0 && len(v.Dimensions) > 0 {
			dims = make([]string, len(v.Dimensions))
		}
		for m := range v.Measures {
			cells[m] = v.Measures[m].Cell(&rows.aggs[i][m])
			states[m] = v.Measures[m].SQLStateCell(&rows.aggs[i][m])
		}
		if err := w.Write(parquet.ViewRow{WindowStart: k.Window(), Dims: dims, Cells: cells, States: states}); err != nil {
			return mf, fmt.Errorf("batch: writing %s: %w", key, err)
		}
	}
	if err := w.Close(); err != nil {
		return mf, fmt.Errorf("batch: writing %s: %w", key, err)
	}
	if len(rows.keys) > 0 {
		mf.MinTime = rows.keys[0].Window()
		mf.MaxTime = rows.keys[len(rows.keys)-1].Window()
	}
	size, err := f.Seek(0, 1)
	if err != nil {
		return mf, err
	}
	if _, err := f.Seek(0, 0); err != nil {
		return mf, err
	}
	mf.Bytes = size
	if err := st.Put(ctx, key, f, size); err != nil {
		return mf, err
	}
	return mf, nil
}

// readViewFile reads every row of a published view file.
func readViewFile(ctx context.Context, st objstore.Bucket, v *schemas.View, key string, fn func(parquet.ViewRow) error) error {
	obj, err := objstore.Open(ctx, st, key)
	if err != nil {
		return err
	}
	defer obj.Close()
	r, err := parquet.NewViewReaderWithStates(v, obj, obj.Size())
	if err != nil {
		return fmt.Errorf("batch: %s: %w", key, err)
	}
	defer r.Close()
	for row, err := range r.Rows(time.Time{}, time.Time{}) {
		if err != nil {
			return fmt.Errorf("batch: %s: %w", key, err)
		}
		if err := fn(row); err != nil {
			return err
		}
	}
	return nil
}

// levelRows rolls a day's rows of v up to each of the view's coarse levels,
// finest first, returned by level. A level's row is the View.Merge of the
// rows whose windows it covers, in the base rows' order (window, then
// dimension values), so it is the same bytes whenever the base rows are:
// an incremental run's levels equal a full run's. A coarser level is
// rolled up from the finer one when it is a multiple of it, which merges
// the same rows in the same order, with fewer merges.
func levelRows(v *schemas.View, base dayRows) iter.Seq2[schemas.Granularity, dayRows] {
	return func(yield func(schemas.Granularity, dayRows) bool) {
		src, srcLevel := base, v.Granularity
		levels := v.Levels()
		for i := len(levels) - 1; i >= 0; i-- {
			l := levels[i]
			if l%srcLevel != 0 {
				src, srcLevel = base, v.Granularity
			}
			out := rollUp(v, src, l)
			if !yield(l, out) {
				return
			}
			src, srcLevel = out, l
		}
	}
}

// rollUp merges rows (sorted by window, then dimension values) into
// windows of level l, keeping that order.
func rollUp(v *schemas.View, rows dayRows, l schemas.Granularity) dayRows {
	var out dayRows
	idx := map[string]int{}
	for i := 0; i < len(rows.keys); {
		start := l.WindowStartMs(rows.keys[i].WindowMs)
		first := len(out.keys)
		clear(idx)
		for ; i < len(rows.keys) && l.WindowStartMs(rows.keys[i].WindowMs) == start; i++ {
			k := rows.keys[i]
			j, ok := idx[k.Dims]
			if !ok {
				j = len(out.keys)
				idx[k.Dims] = j
				out.keys = append(out.keys, schemas.RowKey{WindowMs: start, Dims: k.Dims})
				out.aggs = append(out.aggs, v.NewAggregate())
			}
			v.Merge(out.aggs[j], rows.aggs[i])
		}
		// One window's rows by dimension values, as the base rows are.
		w := out.keys[first:]
		a := out.aggs[first:]
		order := make([]int, len(w))
		for j := range order {
			order[j] = j
		}
		sort.Slice(order, func(x, y int) bool { return w[order[x]].Dims < w[order[y]].Dims })
		ks := make([]schemas.RowKey, len(w))
		as := make([]schemas.Aggregate, len(w))
		for j, o := range order {
			ks[j], as[j] = w[o], a[o]
		}
		copy(w, ks)
		copy(a, as)
	}
	return out
}
