package kafka

import (
	"encoding/binary"
	"errors"
	"time"
)

// errMalformedRecord is appendRecords' error for record bytes that do not
// hold the batch's records.
var errMalformedRecord = errors.New("malformed record")

// batchTimes is what a record's time is made of: the batch's first and
// maximum timestamps, and whether the topic uses log-append time (then
// every record has the batch's maximum).
type batchTimes struct {
	first, max int64
	logAppend  bool
}

// appendRecords appends to dst the records at offset from and after of one
// record batch: recs is the batch's record bytes (inflated), count its
// number of records, [base, end) its offsets. It decodes only what a Record
// holds — the offset and timestamp deltas, the key and the value — and
// leaves the headers encoded, for HeaderMap: most consumers never read
// them, and decoding them was most of the parsing of an uncompressed
// response (docs/performance.md). Key and Value point into recs.
//
// A record that runs past recs, a length or delta out of range, or offsets
// that do not increase within [base, end) are errMalformedRecord; dst then
// holds what was appended before.
//
// The encoding (Kafka's record format v2): a varint length, then the
// record: attributes (one byte, unused), timestamp delta (varlong), offset
// delta (varint), key and value (varint length, -1 for null, then the
// bytes), headers (a varint count, then key and value of each).
func appendRecords(dst []Record, recs []byte, count int, base, end, from int64, ts batchTimes) ([]Record, error) {
	prev := base - 1
	for range count {
		length, n := varint(recs)
		if n <= 0 || length < 0 || length > int64(len(recs)-n) {
			return dst, errMalformedRecord
		}
		size := n + int(length)
		raw := recs[:size:size]
		recs = recs[size:]
		b := raw[n:]
		if len(b) == 0 {
			return dst, errMalformedRecord
		}
		b = b[1:] // attributes
		tsDelta, n := varint(b)
		if n <= 0 {
			return dst, errMalformedRecord
		}
		b = b[n:]
		offDelta, n := varint(b)
		if n <= 0 || offDelta < 0 || offDelta >= end-base {
			return dst, errMalformedRecord
		}
		b = b[n:]
		off := base + offDelta
		if off <= prev {
			return dst, errMalformedRecord
		}
		prev = off
		key, b, ok := varbytes(b)
		if !ok {
			return dst, errMalformedRecord
		}
		val, _, ok := varbytes(b)
		if !ok {
			return dst, errMalformedRecord
		}
		if off < from {
			continue
		}
		t := ts.first + tsDelta
		if ts.logAppend {
			t = ts.max
		}
		dst = append(dst, Record{Offset: off, Time: time.UnixMilli(t), Key: key, Value: val, raw: raw})
	}
	return dst, nil
}

// varint decodes a zig-zag varint (Kafka's varint and varlong alike) and
// returns it and its length, or n <= 0 when b does not start with one. A
// one-byte varint, most of a record's fields, is decoded inline.
func varint(b []byte) (int64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return int64(b[0]>>1) ^ -int64(b[0]&1), 1
	}
	return binary.Varint(b)
}

// varbytes decodes a varint length and that many bytes (nil for length
// -1, a null key or value) and returns them and the rest of b; ok is false
// when b does not hold them. The bytes' capacity ends with them, so a
// caller appending to a key or value cannot overwrite what follows.
func varbytes(b []byte) (v, rest []byte, ok bool) {
	l, n := varint(b)
	switch {
	case n <= 0 || l < -1 || l > int64(len(b)-n):
		return nil, nil, false
	case l == -1:
		return nil, b[n:], true
	}
	end := n + int(l)
	return b[n:end:end], b[end:], true
}
