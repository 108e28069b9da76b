package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/tandem-analytics/tandem/schemas"
)

// A spill is the set of kept (valid, first-occurrence) events of one run,
// bucketed on local disk by UTC event day and Kafka partition, so a run
// aggregates one day at a time and never holds the dataset in memory.
//
// Within a (day, partition) bucket, records are in offset order; a day is
// read partition by partition. That order is the same for a full and an
// incremental run, which is what makes their output byte-identical (float
// sums and sketch encodings depend on the order values are folded in).

// Record is one kept event with its lineage.
type Record struct {
	Partition int32
	Offset    int64
	KafkaMs   int64
	Event     schemas.Event
}

// dayOf returns the UTC day (as days since the epoch) of an event time.
func dayOf(t time.Time) int64 { return dayMs(t.UnixMilli()) }

// dayMs returns the UTC day (as days since the epoch) of Unix milliseconds.
func dayMs(ms int64) int64 {
	d := ms / 86400000
	if ms < 0 && ms%86400000 != 0 {
		d--
	}
	return d
}

// DayTime returns the start of a day numbered by days since the epoch.
func DayTime(day int64) time.Time { return time.UnixMilli(day * 86400000).UTC() }

// encodeRecord appends one record: offset, kafka time and every declared
// field (presence bitmap, then the set values by type).
func encodeRecord(b []byte, s *schemas.Stream, r *Record) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0) // length, patched below
	b = binary.AppendVarint(b, r.Offset)
	b = binary.AppendVarint(b, r.KafkaMs)
	nb := (len(s.Fields) + 7) / 8
	bm := len(b)
	for i := 0; i < nb; i++ {
		b = append(b, 0)
	}
	for i, f := range s.Fields {
		v := &r.Event.Values[i]
		if !v.Set {
			continue
		}
		b[bm+i/8] |= 1 << (i % 8)
		switch f.Type {
		case schemas.TypeString:
			b = binary.AppendUvarint(b, uint64(len(v.Str)))
			b = append(b, v.Str...)
		case schemas.TypeInt64:
			b = binary.AppendVarint(b, v.Int)
		case schemas.TypeFloat64:
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v.Float))
		case schemas.TypeBool:
			if v.Bool {
				b = append(b, 1)
			} else {
				b = append(b, 0)
			}
		case schemas.TypeTimestamp:
			b = binary.AppendVarint(b, v.Time.UnixMilli())
		}
	}
	binary.LittleEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

var errCorruptSpill = errors.New("batch: corrupt spill record")

// spillLayout is what decodeRecord needs of a stream, computed once per
// bucket file rather than per record: each field's type as a small integer
// (a FieldType is a string, and a switch on it compares strings), and the
// indexes of the id and time fields.
type spillLayout struct {
	kinds  []spillKind
	id, tf int
}

type spillKind uint8

const (
	kindString spillKind = iota
	kindInt64
	kindFloat64
	kindBool
	kindTimestamp
	kindOther // none yet: a type added to schemas and not here
)

func layoutOf(s *schemas.Stream) spillLayout {
	l := spillLayout{kinds: make([]spillKind, len(s.Fields)), id: s.FieldIndex(s.IDField), tf: s.FieldIndex(s.TimeField)}
	for i, f := range s.Fields {
		switch f.Type {
		case schemas.TypeString:
			l.kinds[i] = kindString
		case schemas.TypeInt64:
			l.kinds[i] = kindInt64
		case schemas.TypeFloat64:
			l.kinds[i] = kindFloat64
		case schemas.TypeBool:
			l.kinds[i] = kindBool
		case schemas.TypeTimestamp:
			l.kinds[i] = kindTimestamp
		default:
			l.kinds[i] = kindOther
		}
	}
	return l
}

// decodeRecord reads one record body (without its length) into r, reusing
// r.Event.Values. Values are rebuilt exactly as schemas.Decoder builds them.
// str holds the same bytes as b: string values are slices of it, so a
// caller converting a whole block of records once allocates once.
func decodeRecord(b []byte, str string, l *spillLayout, r *Record) error {
	size := len(b)
	var n int
	r.Offset, n = binary.Varint(b)
	if n <= 0 {
		return errCorruptSpill
	}
	b = b[n:]
	r.KafkaMs, n = binary.Varint(b)
	if n <= 0 {
		return errCorruptSpill
	}
	b = b[n:]
	nf := len(l.kinds)
	nb := (nf + 7) / 8
	if len(b) < nb {
		return errCorruptSpill
	}
	bm := b[:nb]
	b = b[nb:]
	if cap(r.Event.Values) < nf {
		r.Event.Values = make([]schemas.Value, nf)
	}
	r.Event.Values = r.Event.Values[:nf]
	for i, kind := range l.kinds {
		v := &r.Event.Values[i]
		*v = schemas.Value{}
		if bm[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		v.Set = true
		switch kind {
		case kindString:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return errCorruptSpill
			}
			at := size - len(b) + n
			v.Str = str[at : at+int(l)]
			b = b[n+int(l):]
		case kindInt64:
			v.Int, n = binary.Varint(b)
			if n <= 0 {
				return errCorruptSpill
			}
			v.Float = float64(v.Int)
			b = b[n:]
		case kindFloat64:
			if len(b) < 8 {
				return errCorruptSpill
			}
			v.Float = math.Float64frombits(binary.LittleEndian.Uint64(b))
			b = b[8:]
		case kindBool:
			if len(b) < 1 {
				return errCorruptSpill
			}
			v.Bool = b[0] == 1
			b = b[1:]
		case kindTimestamp:
			var ms int64
			ms, n = binary.Varint(b)
			if n <= 0 {
				return errCorruptSpill
			}
			v.Time = time.UnixMilli(ms).UTC()
			b = b[n:]
		}
	}
	r.Event.ID = r.Event.Values[l.id].Str
	r.Event.Time = r.Event.Values[l.tf].Time
	return nil
}

// spillDir holds the buckets of one stream.
type spillDir struct {
	dir    string
	stream *schemas.Stream
}

func (d *spillDir) path(day int64, p int32, phase int) string {
	return filepath.Join(d.dir, fmt.Sprintf("d%d", day), fmt.Sprintf("p%05d-%d.rec", p, phase))
}

// spillWriter buffers records of one partition in memory per day and
// appends them to the bucket files when the buffers pass a limit, so the
// number of open files stays at one whatever the number of days.
type spillWriter struct {
	d        *spillDir
	p        int32
	phase    int // buckets of an earlier phase hold lower offsets
	bufs     map[int64][]byte
	buffered int
	limit    int
	days     map[int64]int64 // records per day
	// free holds flushed buffers for the next days to fill, up to freeCap
	// bytes of capacity: a buffer kept per day ever seen would hold up to
	// limit bytes for each of them, growing with the days of the history.
	free    [][]byte
	freeCap int
}

func (d *spillDir) writer(p int32, phase int) *spillWriter {
	return &spillWriter{d: d, p: p, phase: phase, bufs: map[int64][]byte{}, limit: 8 << 20, days: map[int64]int64{}}
}

// addEncoded adds a record encodeRecord made, of an event of day.
func (w *spillWriter) addEncoded(day int64, rec []byte) error {
	b, ok := w.bufs[day]
	if !ok && len(w.free) > 0 {
		b = w.free[len(w.free)-1]
		w.free = w.free[:len(w.free)-1]
		w.freeCap -= cap(b)
	}
	w.bufs[day] = append(b, rec...)
	w.buffered += len(rec)
	w.days[day]++
	if w.buffered >= w.limit {
		return w.flush()
	}
	return nil
}

func (w *spillWriter) flush() error {
	for day, b := range w.bufs {
		if len(b) == 0 {
			continue
		}
		path := w.d.path(day, w.p, w.phase)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("batch: spill: %w", err)
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("batch: spill: %w", err)
		}
		_, err = f.Write(b)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("batch: spill: %w", err)
		}
		delete(w.bufs, day)
		if w.freeCap+cap(b) <= 2*w.limit {
			w.free = append(w.free, b[:0])
			w.freeCap += cap(b)
		}
	}
	w.buffered = 0
	return nil
}

// spillBlock is how much of a bucket file readDay reads at once.
const spillBlock = 1 << 20

// readDay calls fn for every record of day, partition by partition, in
// offset order. r is reused between calls; its strings stay valid.
func (d *spillDir) readDay(day int64, partitions int, fn func(r *Record) error) error {
	var r Record
	return d.scanDay(day, partitions, func() *Record { return &r }, fn)
}

// scanDay decodes the records of day in readDay's order, each into the
// Record next returns (called once per record), and calls done with it.
func (d *spillDir) scanDay(day int64, partitions int, next func() *Record, done func(r *Record) error) error {
	blk := make([]byte, spillBlock)
	for p := int32(0); p < int32(partitions); p++ {
		for phase := 0; phase < 2; phase++ {
			f, err := os.Open(d.path(day, p, phase))
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("batch: spill: %w", err)
			}
			err = readRecords(f, blk, d.stream, p, next, done)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// readRecords reads the records of partition p from one bucket file block
// by block; each block becomes one string that the records' string values
// share.
func readRecords(f io.Reader, blk []byte, s *schemas.Stream, p int32, next func() *Record, done func(r *Record) error) error {
	lay := layoutOf(s) // once, not per record
	carry := 0         // bytes of an unfinished record at the start of blk
	for {
		n, rerr := io.ReadFull(f, blk[carry:])
		data := blk[:carry+n]
		str := string(data)
		pos := 0
		for pos+4 <= len(data) {
			l := int(binary.LittleEndian.Uint32(data[pos:]))
			if pos+4+l > len(data) {
				break
			}
			r := next()
			r.Partition = p
			if err := decodeRecord(data[pos+4:pos+4+l], str[pos+4:pos+4+l], &lay, r); err != nil {
				return err
			}
			if err := done(r); err != nil {
				return err
			}
			pos += 4 + l
		}
		carry = copy(blk, data[pos:])
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			if carry > 0 {
				return errCorruptSpill // a truncated record
			}
			return nil
		case rerr != nil:
			return fmt.Errorf("batch: spill: %w", rerr)
		}
		if carry >= 4 {
			if need := 4 + int(binary.LittleEndian.Uint32(blk)); need > 4*schemas.MaxEventBytes {
				return errCorruptSpill
			} else if need > len(blk) {
				bigger := make([]byte, need) // a record larger than a block
				copy(bigger, blk[:carry])
				blk = bigger
			}
		}
	}
}
