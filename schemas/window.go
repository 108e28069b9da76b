package schemas

import (
	"errors"
	"fmt"
	"time"
)

// Granularity is a window size. Views use one of Granularities; queries may
// use any multiple of their view's granularity.
type Granularity time.Duration

// Granularities are the window sizes a view may declare.
var Granularities = []Granularity{
	Granularity(time.Minute),
	Granularity(5 * time.Minute),
	Granularity(15 * time.Minute),
	Granularity(time.Hour),
	Granularity(6 * time.Hour),
	Granularity(24 * time.Hour),
}

// ParseGranularity reads "1m", "5m", "15m", "1h", "6h", "1d" and, for query
// granularities, any positive whole number of minutes, hours or days
// ("2h", "7d", "90m").
func ParseGranularity(s string) (Granularity, error) {
	g, err := parseGranularity(s)
	if err == nil && g > MaxGranularity {
		return 0, fmt.Errorf("granularity %q: %w", s, ErrGranularityTooLong)
	}
	return g, err
}

// MaxGranularity is the longest granularity: 36500 days, about a century,
// far past any query range and far from time.Duration's overflow (about 292
// years), which a longer count of days would wrap around.
const MaxGranularity = Granularity(36500 * 24 * time.Hour)

// ErrGranularityTooLong is ParseGranularity's error for a granularity over
// MaxGranularity.
var ErrGranularityTooLong = errors.New("longer than the longest granularity, 36500d")

func parseGranularity(s string) (Granularity, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("granularity %q: want a number and a unit, such as 1m, 1h or 1d", s)
	}
	var n int64
	for _, c := range s[:len(s)-1] {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("granularity %q: want a number and a unit, such as 1m, 1h or 1d", s)
		}
		if n > 1e9 {
			// Past any allowed count in any unit; stop before n overflows.
			return 0, fmt.Errorf("granularity %q: %w", s, ErrGranularityTooLong)
		}
		n = n*10 + int64(c-'0')
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'm':
		unit = time.Minute
	case 'h':
		unit = time.Hour
	case 'd':
		unit = 24 * time.Hour
	default:
		return 0, fmt.Errorf("granularity %q: unit must be m, h or d", s)
	}
	if n <= 0 {
		return 0, fmt.Errorf("granularity %q: must be positive", s)
	}
	if n > int64(MaxGranularity)/int64(unit) {
		return 0, fmt.Errorf("granularity %q: %w", s, ErrGranularityTooLong)
	}
	return Granularity(time.Duration(n) * unit), nil
}

// IsViewGranularity reports whether g is one of Granularities.
func (g Granularity) IsViewGranularity() bool {
	for _, v := range Granularities {
		if g == v {
			return true
		}
	}
	return false
}

// D returns the window size as a time.Duration.
func (g Granularity) D() time.Duration { return time.Duration(g) }

// String writes g in the shortest of d, h and m.
func (g Granularity) String() string {
	d := time.Duration(g)
	switch {
	case d <= 0:
		return "0m"
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	default:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
}

// MarshalText writes g as String does, so manifests name levels "1h".
func (g Granularity) MarshalText() ([]byte, error) { return []byte(g.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (g *Granularity) UnmarshalText(b []byte) error {
	v, err := ParseGranularity(string(b))
	if err != nil {
		return err
	}
	*g = v
	return nil
}

// WindowStart floors t to its window of size g, in UTC. Windows are aligned
// to the Unix epoch, so a 1d window is a UTC calendar day.
func (g Granularity) WindowStart(t time.Time) time.Time {
	return time.UnixMilli(g.WindowStartMs(t.UnixMilli())).UTC()
}

// WindowStartMs is WindowStart on Unix milliseconds.
func (g Granularity) WindowStartMs(ms int64) int64 {
	size := time.Duration(g).Milliseconds()
	start := ms - ms%size
	if ms < 0 && ms%size != 0 {
		start -= size
	}
	return start
}

// Chunk identifies offsets [Index*size, (Index+1)*size) of one Kafka
// partition: the unit in which the batch layer absorbs what the speed layer
// has counted.
type Chunk struct {
	Partition int32
	Index     int64
}

// ChunkOf returns the chunk index holding offset for the given chunk size.
func ChunkOf(offset, chunkSize int64) int64 { return offset / chunkSize }

// ChunkStart returns the first offset of chunk index.
func ChunkStart(index, chunkSize int64) int64 { return index * chunkSize }
