package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	pq "github.com/parquet-go/parquet-go"

	"github.com/tandem-analytics/tandem/internal/parquet"
	"github.com/tandem-analytics/tandem/schemas"
)

// The archiver stores, for every message it found valid, the decoded event
// in typed columns (one per declared field), and nulls for the others.
// Decoding a message again from its JSON costs more than reading the whole
// file, so a run takes the event from the typed columns when they are
// certainly what schemas.Decoder makes of the message today: the file was
// written under the stream's current SchemaVersion and the current
// schemas.DecoderVersion. The verdict is then Decode's with no ingest
// time (the archiver's), and the run applies the one check that depends
// on configuration, the future skew, itself (Decoder.TooFarAhead).
//
// Messages whose typed id is null (the archiver refused them) are decoded
// again from _raw, so each gets this run's verdict, unless the footer
// shows the archiver's refusals hold for this run's future skew too
// (typedColumns); so are all messages of a file written under other
// versions. TestTypedMatchesDecode checks the paths agree.

// rawTyped turns the typed-column path on (a variable for tests, which
// compare it with decoding every message).
var rawTyped = true

// decoderVersion is the schemas.DecoderVersion this build decodes with (a
// variable so tests can play a decoder upgrade).
var decoderVersion = schemas.DecoderVersion

// typedColumns returns the column of each declared field of s in pf when
// the typed columns of pf hold Decoder's output for s (same schema and
// decoder versions, and columns of the types RawWriter writes); ok is
// false otherwise. refusedInvalid reports that a message the writer
// refused (null typed id) is invalid for a decoder with future skew
// runSkew too, so its original bytes need not be read: the writer's
// decoder had the skew check off, so its refusals do not depend on the
// skew, or had a skew at least runSkew (> 0), so an event too far ahead
// for it is too far ahead for runSkew.
func typedColumns(pf *pq.File, s *schemas.Stream, runSkew time.Duration) (cols []int, refusedInvalid, ok bool) {
	if !rawTyped {
		return nil, false, false
	}
	if v, found := pf.Lookup(parquet.MetaSchemaVersion); !found || v != s.SchemaVersion() {
		return nil, false, false
	}
	if v, found := pf.Lookup(parquet.MetaDecoderVersion); !found || v != decoderVersion {
		return nil, false, false
	}
	cols = make([]int, len(s.Fields))
	for i, f := range s.Fields {
		leaf, found := pf.Schema().Lookup(f.Name)
		if !found || leaf.MaxRepetitionLevel != 0 || leaf.MaxDefinitionLevel != 1 || leaf.Node.Type().Kind() != parquet.PhysicalKind(schemas.FieldColumnType(f.Type)) {
			return nil, false, false
		}
		cols[i] = leaf.ColumnIndex
	}
	if v, found := pf.Lookup(parquet.MetaMaxFutureSkew); found {
		if wrote, err := time.ParseDuration(v); err == nil && wrote >= 0 {
			refusedInvalid = wrote == 0 || (runSkew > 0 && runSkew <= wrote)
		}
	}
	return cols, refusedInvalid, true
}

// fieldPages yields the values of one typed (optional) column chunk, row
// by row, encoded as encodeRecord encodes the field's schemas.Value (the
// value Decoder builds), so a typed row becomes its spill record without
// building an event.
type fieldPages struct {
	pages pq.Pages
	name  string
	typ   schemas.FieldType
	page  pq.Page

	rows int    // rows in the page
	i    int    // next row
	j    int    // next non-null value
	defs []byte // definition levels (1: set); nil when the page has no nulls

	// One of these holds the page's non-null values (fast paths), or vals
	// holds one value per row (any other page).
	ints    []int64
	dbls    []float64
	data    []byte
	offs    []uint32 // data[offs[k]:offs[k+1]] is value k, or dictionary entry k when idx is set
	idx     []int32  // dictionary indexes of the values
	vals    []pq.Value
	generic bool
	buf     []pq.Value
}

// encodeNext appends the next row's value to b as encodeRecord encodes it
// (nothing for a null) and reports whether it is set; str is a string's
// value (valid until the next call) and n an int64's or a timestamp's
// (Unix ms).
func (c *fieldPages) encodeNext(b []byte) (out []byte, set bool, str []byte, n int64, err error) {
	for c.i >= c.rows {
		if err := c.load(); err != nil {
			return b, false, nil, 0, err
		}
	}
	row := c.i
	c.i++
	if c.generic {
		return c.encodeValue(b, c.vals[row])
	}
	if c.defs != nil && c.defs[row] == 0 {
		return b, false, nil, 0, nil
	}
	k := c.j
	c.j++
	switch c.typ {
	case schemas.TypeString:
		if c.idx != nil {
			k = int(c.idx[k])
			if k < 0 || k+1 >= len(c.offs) {
				return b, false, nil, 0, fmt.Errorf("column %s: dictionary index out of range", c.name)
			}
		}
		str = c.data[c.offs[k]:c.offs[k+1]]
		b = binary.AppendUvarint(b, uint64(len(str)))
		return append(b, str...), true, str, 0, nil
	case schemas.TypeInt64, schemas.TypeTimestamp:
		n = c.ints[k]
		return binary.AppendVarint(b, n), true, nil, n, nil
	case schemas.TypeFloat64:
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(c.dbls[k])), true, nil, 0, nil
	}
	return b, false, nil, 0, fmt.Errorf("column %s: no fast path for %s", c.name, c.typ)
}

// encodeValue is encodeNext for a generic Parquet value.
func (c *fieldPages) encodeValue(b []byte, pv pq.Value) ([]byte, bool, []byte, int64, error) {
	if pv.IsNull() {
		return b, false, nil, 0, nil
	}
	switch c.typ {
	case schemas.TypeString:
		str := pv.ByteArray()
		b = binary.AppendUvarint(b, uint64(len(str)))
		return append(b, str...), true, str, 0, nil
	case schemas.TypeInt64, schemas.TypeTimestamp:
		return binary.AppendVarint(b, pv.Int64()), true, nil, pv.Int64(), nil
	case schemas.TypeFloat64:
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(pv.Double())), true, nil, 0, nil
	case schemas.TypeBool:
		if pv.Boolean() {
			return append(b, 1), true, nil, 0, nil
		}
		return append(b, 0), true, nil, 0, nil
	}
	return b, false, nil, 0, fmt.Errorf("column %s: unknown type %s", c.name, c.typ)
}

func (c *fieldPages) load() error {
	c.release()
	p, err := c.pages.ReadPage()
	if err != nil {
		return err
	}
	c.page, c.i, c.j, c.rows = p, 0, 0, int(p.NumRows())
	c.generic, c.defs, c.idx = false, nil, nil
	if p.NumNulls() > 0 {
		c.defs = p.DefinitionLevels()
		if len(c.defs) != c.rows {
			return c.loadGeneric(p)
		}
	}
	nonNull := c.rows - int(p.NumNulls())
	d := p.Data()
	if dict := p.Dictionary(); dict != nil {
		if c.typ != schemas.TypeString {
			return c.loadGeneric(p)
		}
		c.idx = d.Int32()
		dd := dict.Page().Data()
		c.data, c.offs = dd.ByteArray()
		if len(c.idx) != nonNull {
			return c.loadGeneric(p)
		}
		return nil
	}
	switch c.typ {
	case schemas.TypeString:
		c.data, c.offs = d.ByteArray()
		if len(c.offs) != nonNull+1 {
			return c.loadGeneric(p)
		}
	case schemas.TypeInt64, schemas.TypeTimestamp:
		if c.ints = d.Int64(); len(c.ints) != nonNull {
			return c.loadGeneric(p)
		}
	case schemas.TypeFloat64:
		if c.dbls = d.Double(); len(c.dbls) != nonNull {
			return c.loadGeneric(p)
		}
	default:
		return c.loadGeneric(p)
	}
	return nil
}

// loadGeneric reads page p value by value: the path for what the fast
// paths do not know (booleans, dictionaries of numbers).
func (c *fieldPages) loadGeneric(p pq.Page) error {
	c.generic = true
	c.vals = c.buf[:0]
	if cap(c.buf) < c.rows {
		c.buf = make([]pq.Value, c.rows)
	}
	vals := c.buf[:c.rows]
	n, err := p.Values().ReadValues(vals)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if n != c.rows {
		return fmt.Errorf("column %s: page of %d rows holds %d values", c.name, c.rows, n)
	}
	c.vals = vals
	return nil
}

func (c *fieldPages) release() {
	if c.page != nil {
		pq.Release(c.page)
		c.page, c.ints, c.dbls, c.data, c.offs, c.idx, c.vals = nil, nil, nil, nil, nil, nil, nil
	}
}

func (c *fieldPages) close() {
	c.release()
	c.pages.Close()
}
