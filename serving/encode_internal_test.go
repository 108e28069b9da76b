package serving

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAppendStringEqualsMarshal checks appendString's fast path against
// json.Marshal: every single byte, HTML-escaped characters, invalid UTF-8,
// U+2028, and random strings of bytes around the ASCII range.
func TestAppendStringEqualsMarshal(t *testing.T) {
	cases := []string{"", "NL", "2026-12-07T10:00:00Z", "a\"b", `a\b`, "<script>&", "\u2028\u2029", "é", "\xff\xfe", "tab\there", "\x7f"}
	for c := 0; c < 256; c++ {
		cases = append(cases, string([]byte{byte(c)}), "x"+string([]byte{byte(c)})+"y")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = byte(rng.IntN(160))
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(appendString([]byte("prefix"), s))[len("prefix"):], "%q", s)
	}
}
