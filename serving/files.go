package serving

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/tandem-analytics/tandem/internal/objstore"
	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

// wholeFileBytes: files up to this size are fetched in one request and
// parsed from memory; larger ones are read by range (only the row groups a
// query needs).
const wholeFileBytes = 32 << 20

// S3ViewFiles reads batch view files from an S3 store with internal/parquet.
type S3ViewFiles struct {
	Store objstore.Bucket
}

var _ ViewFiles = S3ViewFiles{}

// Open implements ViewFiles.
func (f S3ViewFiles) Open(ctx context.Context, v *schemas.View, key string) (ViewFile, error) {
	obj, err := objstore.Open(ctx, f.Store, key)
	if err != nil {
		return nil, err
	}
	var r io.ReaderAt = obj
	if obj.Size() <= wholeFileBytes {
		buf := make([]byte, obj.Size())
		if _, err := obj.ReadAt(buf, 0); err != nil && err != io.EOF {
			obj.Close()
			return nil, err
		}
		obj.Close()
		r = bytes.NewReader(buf)
	}
	vf, err := OpenViewFile(v, r, obj.Size())
	if err != nil {
		obj.Close()
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	vf.closer = obj
	return vf, nil
}

// ParquetViewFile is a ViewFile over internal/parquet's ViewReader.
type ParquetViewFile struct {
	r      *parquet.ViewReader
	groups []RowGroup
	closer io.Closer
}

// OpenViewFile opens a batch view file held by r and checks that it was
// written for the view's current definition.
func OpenViewFile(v *schemas.View, r io.ReaderAt, size int64) (*ParquetViewFile, error) {
	vr, err := parquet.NewViewReader(v, r, size)
	if err != nil {
		return nil, err
	}
	if fp, ok := vr.Metadata(parquet.MetaSchemaVersion); ok && fp != v.Fingerprint() {
		vr.Close()
		return nil, fmt.Errorf("the file was written for another definition of view %s (fingerprint %s, configuration has %s)", v.Name, fp, v.Fingerprint())
	}
	f := &ParquetViewFile{r: vr}
	for _, g := range vr.RowGroups() {
		f.groups = append(f.groups, RowGroup{MinMs: g.MinTime.UnixMilli(), MaxMs: g.MaxTime.UnixMilli(), Rows: g.Rows, HasStats: true})
	}
	return f, nil
}

// RowGroups implements ViewFile.
func (f *ParquetViewFile) RowGroups() []RowGroup { return f.groups }

// ReadRowGroup implements ViewFile.
func (f *ParquetViewFile) ReadRowGroup(ctx context.Context, i int, keys bool, need []bool, fn func(windowMs int64, dims []string, cells []any) error) error {
	k := 0
	return f.r.EachRowGroupRow(i, keys, need, func(row parquet.ViewRow) error {
		if k++; k%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		var ms int64
		if keys {
			ms = row.WindowStart.UnixMilli()
		}
		return fn(ms, row.Dims, row.Cells)
	})
}

// Close implements ViewFile.
func (f *ParquetViewFile) Close() error {
	f.r.Close()
	if f.closer != nil {
		return f.closer.Close()
	}
	return nil
}
