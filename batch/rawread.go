package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	pq "github.com/parquet-go/parquet-go"

	"github.com/tandem-analytics/tandem/internal/s3"
	"github.com/tandem-analytics/tandem/schemas"
)

// rawColumns is one row group of a raw file, reduced to the three columns a
// run needs: the batch layer re-validates every message from its original
// bytes, so the typed columns are not read at all (columnar: they cost no
// I/O decoding).
type rawColumns struct {
	offsets []int64
	kafkaMs []int64
	raw     []byte   // the _raw values, concatenated
	ends    []uint32 // raw[ends[i-1]:ends[i]] is row i
}

func (rc *rawColumns) reset() {
	rc.offsets, rc.kafkaMs, rc.raw, rc.ends = rc.offsets[:0], rc.kafkaMs[:0], rc.raw[:0], rc.ends[:0]
}

func (rc *rawColumns) rawAt(i int) []byte {
	var start uint32
	if i > 0 {
		start = rc.ends[i-1]
	}
	return rc.raw[start:rc.ends[i]]
}

// rawFileReader reads a raw object downloaded to a local temporary file.
// Downloading whole is the cheapest way to read a Parquet file from S3: the
// alternative, ranged GETs per page, costs a round trip each.
type rawFileReader struct {
	f                     *os.File
	pf                    *pq.File
	colOff, colTS, colRaw int
	colTime               int // the stream's typed time field, for row-group pruning; -1 if absent
}

// openRawFile downloads key into dir and opens it.
func openRawFile(ctx context.Context, st *s3.Store, key, dir string, s *schemas.Stream) (*rawFileReader, error) {
	body, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	f, err := os.CreateTemp(dir, "raw-*.parquet")
	if err != nil {
		return nil, fmt.Errorf("batch: temporary file for %s: %w", key, err)
	}
	os.Remove(f.Name()) // unlinked: the space is freed when closed, even after a crash
	size, err := io.Copy(f, body)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("batch: downloading %s: %w", key, err)
	}
	r, err := newRawFileReader(f, size, s)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("batch: %s: %w", key, err)
	}
	return r, nil
}

func newRawFileReader(f *os.File, size int64, s *schemas.Stream) (*rawFileReader, error) {
	pf, err := pq.OpenFile(f, size, pq.SkipBloomFilters(true), pq.ReadBufferSize(1<<20))
	if err != nil {
		return nil, err
	}
	r := &rawFileReader{f: f, pf: pf, colTime: -1}
	look := func(name string) (int, error) {
		leaf, ok := pf.Schema().Lookup(name)
		if !ok {
			return -1, fmt.Errorf("raw file has no %s column", name)
		}
		return leaf.ColumnIndex, nil
	}
	if r.colOff, err = look(schemas.ColOffset); err != nil {
		return nil, err
	}
	if r.colTS, err = look(schemas.ColKafkaTS); err != nil {
		return nil, err
	}
	if r.colRaw, err = look(schemas.ColRaw); err != nil {
		return nil, err
	}
	if c, err := look(s.TimeField); err == nil {
		r.colTime = c
	}
	return r, nil
}

func (r *rawFileReader) Close() error { return r.f.Close() }

func (r *rawFileReader) numRowGroups() int { return len(r.pf.RowGroups()) }

// timeBounds returns the min and max event time (Unix ms) the archiver's
// typed time column holds in row group i. ok is false when unknown (no
// statistics, or only nulls): the caller must then read the row group.
func (r *rawFileReader) timeBounds(i int) (minMs, maxMs int64, ok bool) {
	if r.colTime < 0 {
		return 0, 0, false
	}
	cc := r.pf.RowGroups()[i].ColumnChunks()[r.colTime]
	fc, isFile := cc.(*pq.FileColumnChunk)
	if !isFile {
		return 0, 0, false
	}
	lo, hi, ok := fc.Bounds()
	if !ok || lo.IsNull() || hi.IsNull() || lo.Kind() != pq.Int64 {
		return 0, 0, false
	}
	return lo.Int64(), hi.Int64(), true
}

// offsetBounds returns the first and last offset of row group i.
func (r *rawFileReader) offsetBounds(i int) (lo, hi int64, ok bool) {
	cc := r.pf.RowGroups()[i].ColumnChunks()[r.colOff]
	fc, isFile := cc.(*pq.FileColumnChunk)
	if !isFile {
		return 0, 0, false
	}
	a, b, ok := fc.Bounds()
	if !ok || a.Kind() != pq.Int64 {
		return 0, 0, false
	}
	return a.Int64(), b.Int64(), true
}

// readRowGroup fills rc with row group i.
func (r *rawFileReader) readRowGroup(i int, rc *rawColumns) error {
	rc.reset()
	rg := r.pf.RowGroups()[i]
	cols := rg.ColumnChunks()
	if err := readInt64s(cols[r.colOff], &rc.offsets); err != nil {
		return fmt.Errorf("column %s: %w", schemas.ColOffset, err)
	}
	if err := readInt64s(cols[r.colTS], &rc.kafkaMs); err != nil {
		return fmt.Errorf("column %s: %w", schemas.ColKafkaTS, err)
	}
	if err := readByteArrays(cols[r.colRaw], rc); err != nil {
		return fmt.Errorf("column %s: %w", schemas.ColRaw, err)
	}
	if len(rc.offsets) != len(rc.kafkaMs) || len(rc.offsets) != len(rc.ends) {
		return fmt.Errorf("raw row group %d has columns of different lengths (%d, %d, %d)", i, len(rc.offsets), len(rc.kafkaMs), len(rc.ends))
	}
	return nil
}

func readInt64s(cc pq.ColumnChunk, out *[]int64) error {
	pages := cc.Pages()
	defer pages.Close()
	for {
		p, err := pages.ReadPage()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if p.NumNulls() > 0 {
			pq.Release(p)
			return errors.New("unexpected nulls")
		}
		if p.Dictionary() == nil {
			d := p.Data()
			*out = append(*out, d.Int64()...)
		} else {
			vals := make([]pq.Value, p.NumValues())
			n, err := p.Values().ReadValues(vals)
			if err != nil && !errors.Is(err, io.EOF) {
				pq.Release(p)
				return err
			}
			for _, v := range vals[:n] {
				*out = append(*out, v.Int64())
			}
		}
		pq.Release(p)
	}
}

func readByteArrays(cc pq.ColumnChunk, rc *rawColumns) error {
	pages := cc.Pages()
	defer pages.Close()
	for {
		p, err := pages.ReadPage()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if p.NumNulls() > 0 {
			pq.Release(p)
			return errors.New("unexpected nulls")
		}
		if p.Dictionary() == nil {
			d := p.Data()
			data, offs := d.ByteArray()
			// offs has one more entry than values: offs[i]..offs[i+1].
			base := uint32(len(rc.raw))
			rc.raw = append(rc.raw, data[offs[0]:offs[len(offs)-1]]...)
			for j := 1; j < len(offs); j++ {
				rc.ends = append(rc.ends, base+offs[j]-offs[0])
			}
		} else {
			vals := make([]pq.Value, p.NumValues())
			n, err := p.Values().ReadValues(vals)
			if err != nil && !errors.Is(err, io.EOF) {
				pq.Release(p)
				return err
			}
			for _, v := range vals[:n] {
				rc.raw = append(rc.raw, v.ByteArray()...)
				rc.ends = append(rc.ends, uint32(len(rc.raw)))
			}
		}
		pq.Release(p)
	}
}
