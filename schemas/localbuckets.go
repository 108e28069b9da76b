package schemas

import (
	"fmt"
	"sort"
	"time"
)

// BucketPiece is one stretch of a LocalBuckets function: from Start (Unix
// seconds, inclusive) up to the next piece's Start, a window starting at w
// falls in the bucket starting at Fixed when IsFixed, and otherwise at
// floor((w+Shift)/Size)·Size − Shift: local time with a constant UTC
// offset (Shift, in seconds) floored to the bucket size.
type BucketPiece struct {
	Start   int64
	IsFixed bool
	Fixed   int64
	Shift   int64
}

// LocalBuckets maps window starts to the starts of buckets of local time
// in a time zone, over a range: whole local days (counted from 1970-01-01
// local, so a 7d bucket starts on the same weekday as in UTC), or parts of
// a day by the wall clock. A day of 23 or 25 hours (a DST change) is one
// bucket. It is a piecewise function of few pieces — one per stretch of
// constant offset, plus one per bucket cut by a change — so it can be
// written as one SQL expression and evaluated by a binary search.
//
// Buckets are the wall clock's: a bucket of size g starts at each instant
// whose local time is a multiple of g since local midnight. Two rules make
// DST changes come out as people count: when the clock jumps forward over
// such a time (a zone whose day starts at 01:00 on its DST day), the
// bucket starts at the jump; when it falls back over one, a day starts
// only once (the first time), while an hour that happens twice is two
// hour buckets.
type LocalBuckets struct {
	Zone   string
	Size   int64 // seconds; divides 86400 or is a multiple of it
	Pieces []BucketPiece
}

// ErrLocalGranularity is returned by NewLocalBuckets for a bucket size
// local time cannot be divided into.
var ErrLocalGranularity = fmt.Errorf("local-time buckets need a granularity that divides a day (such as 15m, 1h, 6h) or whole days (1d, 7d)")

// ErrLocalTooLong is returned by NewLocalBuckets for a range crossing more
// than MaxLocalPieces/2 clock changes.
var ErrLocalTooLong = fmt.Errorf("the range crosses too many clock changes")

// MaxLocalPieces bounds the pieces of one LocalBuckets (two per clock
// change): each is a branch of the SQL the speed half runs, and finding a
// change past 2037 takes the time package milliseconds.
const MaxLocalPieces = 800

const day = 24 * 60 * 60

// NewLocalBuckets builds the buckets of size g in loc for window starts in
// [from, to).
func NewLocalBuckets(loc *time.Location, g time.Duration, from, to time.Time) (*LocalBuckets, error) {
	size := int64(g / time.Second)
	if g%time.Second != 0 || size <= 0 || (size < day && day%size != 0) || (size > day && size%day != 0) {
		return nil, ErrLocalGranularity
	}
	lb := &LocalBuckets{Zone: loc.String(), Size: size}
	lo, hi := from.Unix()-1, to.Unix()+1
	// Start early enough that the bucket holding lo has begun and the
	// pieces before lo (dropped below) settle the carried value.
	t := lo - 2*size - 2*day
	prevOff, first := int64(0), true
	var pieces []BucketPiece
	carry := int64(0) // the bucket open at the end of the last segment
	for t < hi {
		if len(pieces) > MaxLocalPieces+8 { // +8: pieces before lo are dropped below
			return nil, ErrLocalTooLong
		}
		at := time.Unix(t, 0).In(loc)
		_, o := at.Zone()
		off := int64(o)
		_, end := at.ZoneBounds()
		e := hi
		if !end.IsZero() && end.Unix() < hi {
			e = end.Unix()
		}
		if e <= t { // defensive: a zone without progress
			e = t + 1
		}
		f := t + mod(-(t+off), size) // first wall-aligned instant of the segment
		if !first {
			switch {
			case off > prevOff && mod(-(t+prevOff), size) < off-prevOff:
				// Forward over an aligned wall time: the bucket starts at
				// the jump.
				pieces = append(pieces, BucketPiece{Start: t, IsFixed: true, Fixed: t})
				carry = t
			case off < prevOff && size >= day && f+off < t+prevOff:
				// Back over an aligned wall time: a day starts once.
				f += size
				pieces = append(pieces, BucketPiece{Start: t, IsFixed: true, Fixed: carry})
			case f > t:
				pieces = append(pieces, BucketPiece{Start: t, IsFixed: true, Fixed: carry})
			}
		}
		if first {
			f = t
		}
		if f < e {
			pieces = append(pieces, BucketPiece{Start: f, Shift: off})
			last := e - 1
			carry = floorDiv(last+off, size)*size - off
		}
		first, prevOff, t = false, off, e
	}
	// Keep the piece holding lo and those after.
	i := sort.Search(len(pieces), func(i int) bool { return pieces[i].Start > lo }) - 1
	if i < 0 {
		i = 0
	}
	pieces = pieces[i:]
	// Merge neighbours that compute the same thing.
	for _, p := range pieces {
		if n := len(lb.Pieces); n > 0 {
			q := lb.Pieces[n-1]
			if q.IsFixed == p.IsFixed && q.Fixed == p.Fixed && q.Shift == p.Shift {
				continue
			}
		}
		lb.Pieces = append(lb.Pieces, p)
	}
	lb.Pieces[0].Start = min(lb.Pieces[0].Start, lo)
	if len(lb.Pieces) > MaxLocalPieces {
		return nil, ErrLocalTooLong
	}
	return lb, nil
}

// Bucket returns the bucket start of a window starting at sec (Unix
// seconds) inside the range the buckets were built for.
func (b *LocalBuckets) Bucket(sec int64) int64 {
	i := sort.Search(len(b.Pieces), func(i int) bool { return b.Pieces[i].Start > sec }) - 1
	if i < 0 {
		i = 0
	}
	p := b.Pieces[i]
	if p.IsFixed {
		return p.Fixed
	}
	return floorDiv(sec+p.Shift, b.Size)*b.Size - p.Shift
}

// AlignedTo reports whether every bucket boundary is a multiple of unit
// seconds (windows or level windows of that size then never straddle
// two buckets), and if not, an offset that breaks it (for the message).
func (b *LocalBuckets) AlignedTo(unit int64) (ok bool, badShift int64) {
	for _, p := range b.Pieces {
		switch {
		case p.IsFixed && p.Fixed == p.Start && mod(p.Start, unit) != 0:
			return false, 0
		case !p.IsFixed && mod(p.Shift, unit) != 0:
			return false, p.Shift
		}
	}
	return b.Size%unit == 0, 0
}

func mod(a, m int64) int64 {
	r := a % m
	if r < 0 {
		r += m
	}
	return r
}

func floorDiv(a, m int64) int64 {
	q := a / m
	if a%m != 0 && (a < 0) != (m < 0) {
		q--
	}
	return q
}
