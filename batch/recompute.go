package batch

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/schemas"
)

// dayRows is one view's rows of one UTC day, sorted by window, then
// dimension values.
type dayRows struct {
	keys []schemas.RowKey
	aggs []schemas.Aggregate
}

// aggregateDay folds every kept event of day into rows of each view, with
// the shared View.Key/Add (the speed layer's code, not a second copy). A
// day is the unit of memory: its rows, never the whole dataset.
func aggregateDay(sp *spillDir, day int64, partitions int, views []*schemas.View, each func(r *Record) error) ([]dayRows, error) {
	maps := make([]map[schemas.RowKey]schemas.Aggregate, len(views))
	for i := range maps {
		maps[i] = map[schemas.RowKey]schemas.Aggregate{}
	}
	err := sp.readDayAhead(day, partitions, func(r *Record) error {
		for i, v := range views {
			k := v.Key(&r.Event)
			a, ok := maps[i][k]
			if !ok {
				a = v.NewAggregate()
				maps[i][k] = a
			}
			v.Add(a, &r.Event)
		}
		if each != nil {
			return each(r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]dayRows, len(views))
	for i, m := range maps {
		keys := make([]schemas.RowKey, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(a, b int) bool {
			if keys[a].WindowMs != keys[b].WindowMs {
				return keys[a].WindowMs < keys[b].WindowMs
			}
			return keys[a].Dims < keys[b].Dims
		})
		aggs := make([]schemas.Aggregate, len(keys))
		for j, k := range keys {
			aggs[j] = m[k]
		}
		out[i] = dayRows{keys: keys, aggs: aggs}
	}
	return out, nil
}

// writeDayFile writes rows to a local Parquet file and uploads it to key.
func writeDayFile(ctx context.Context, st *s3.Store, tmp string, v *schemas.View, key string, day int64, rows dayRows) (schemas.ManifestFile, error) {
	mf := schemas.ManifestFile{Key: key, Day: DayTime(day), Rows: int64(len(rows.keys))}
	f, err := os.CreateTemp(tmp, "view-*.parquet")
	if err != nil {
		return mf, fmt.Errorf("batch: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	w := parquet.NewViewWriter(f, v, parquet.ViewWriterOptions{RowGroupRows: 64 << 10})
	cells := make([]any, len(v.Measures))
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
		}
		if err := w.Write(parquet.ViewRow{WindowStart: k.Window(), Dims: dims, Cells: cells}); err != nil {
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
func readViewFile(ctx context.Context, st *s3.Store, v *schemas.View, key string, fn func(parquet.ViewRow) error) error {
	obj, err := st.Open(ctx, key)
	if err != nil {
		return err
	}
	defer obj.Close()
	r, err := parquet.NewViewReader(v, obj, obj.Size())
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
