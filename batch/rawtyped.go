package batch

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

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
func typedColumns(pf *parquet.RawFile, s *schemas.Stream, runSkew time.Duration) (cols []int, refusedInvalid, ok bool) {
	if !rawTyped {
		return nil, false, false
	}
	if v, found := pf.Meta(parquet.MetaSchemaVersion); !found || v != s.SchemaVersion() {
		return nil, false, false
	}
	if v, found := pf.Meta(parquet.MetaDecoderVersion); !found || v != decoderVersion {
		return nil, false, false
	}
	cols = make([]int, len(s.Fields))
	for i, f := range s.Fields {
		c, found := pf.TypedColumn(f)
		if !found {
			return nil, false, false
		}
		cols[i] = c
	}
	if v, found := pf.Meta(parquet.MetaMaxFutureSkew); found {
		if wrote, err := time.ParseDuration(v); err == nil && wrote >= 0 {
			refusedInvalid = wrote == 0 || (runSkew > 0 && runSkew <= wrote)
		}
	}
	return cols, refusedInvalid, true
}

// fieldCol is one typed column of a row group, whose values encodeNext
// encodes as encodeRecord encodes the field's schemas.Value (the value
// Decoder builds), so a typed row becomes its spill record without
// building an event.
type fieldCol struct {
	pages *parquet.TypedPages
	typ   schemas.FieldType
	v     parquet.TypedValue
}

// encodeNext appends the next row's value to b as encodeRecord encodes it
// (nothing for a null) and reports whether it is set; str is a string's
// value (valid until the next call) and n an int64's or a timestamp's
// (Unix ms).
func (c *fieldCol) encodeNext(b []byte) (out []byte, set bool, str []byte, n int64, err error) {
	if err := c.pages.Next(&c.v); err != nil {
		return b, false, nil, 0, err
	}
	if !c.v.Set {
		return b, false, nil, 0, nil
	}
	switch c.typ {
	case schemas.TypeString:
		b = binary.AppendUvarint(b, uint64(len(c.v.Str)))
		return append(b, c.v.Str...), true, c.v.Str, 0, nil
	case schemas.TypeInt64, schemas.TypeTimestamp:
		return binary.AppendVarint(b, c.v.Int), true, nil, c.v.Int, nil
	case schemas.TypeFloat64:
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(c.v.Float)), true, nil, 0, nil
	case schemas.TypeBool:
		if c.v.Bool {
			return append(b, 1), true, nil, 0, nil
		}
		return append(b, 0), true, nil, 0, nil
	}
	return b, false, nil, 0, fmt.Errorf("unknown field type %s", c.typ)
}
