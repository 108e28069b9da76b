package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"math"

	enc "github.com/DataDog/sketches-go/ddsketch/encoding"
)

// DDFlat is a stored quantile sketch as plain counts: the positive and
// negative bins (index → count) and the zero count, under the one index
// mapping every quantile measure uses. Serving decodes cells into it
// (DecodeDDFlat: no sketch object, no store) and merges it with
// DDUnion.AddFlat, adding count arrays; DDUnion.Sketch gives the library's
// sketch for the answer.
type DDFlat struct {
	Pos, Neg FlatBins
	Zero     float64
}

// FlatBins holds a store's bins that have a count, as two parallel
// slices. Sketches of a few values spread over a wide range hold a few
// bins far apart: the pairs take as many entries as values, not as the
// range.
type FlatBins struct {
	Index []int32
	Count []float64
	// Lo and Hi are the lowest and highest index (when Index is not empty).
	Lo, Hi int32
}

// Count is the number of values the sketch holds.
func (f *DDFlat) Count() float64 {
	n := f.Zero
	for _, c := range f.Pos.Count {
		n += c
	}
	for _, c := range f.Neg.Count {
		n += c
	}
	return n
}

var (
	ddMapping      = newDD().IndexMapping // immutable: shared by every sketch DDUnion builds
	ddMappingBytes []byte                 // our mapping as Cell encodes it, flag included
	ddIndexLo      int                    // the lowest and highest bin index our mapping writes
	ddIndexHi      int
)

func init() {
	m := ddMapping
	m.Encode(&ddMappingBytes)
	ddIndexLo, ddIndexHi = m.Index(m.MinIndexableValue()), m.Index(m.MaxIndexableValue())
}

// DecodeDDFlat decodes a quantile cell (Cell's encoding) into counts, or
// returns nil for the empty sketch. It accepts what StateFromCell
// accepts from Cell and refuses what is not ours: another index mapping,
// bins our mapping cannot produce (so memory stays bounded by its range),
// counts that are negative or not finite.
func DecodeDDFlat(b []byte) (*DDFlat, error) {
	return DecodeDDFlatInto(new(DDFlat), b)
}

// DecodeDDFlatInto is DecodeDDFlat decoding into f, whose slices it reuses
// (what f held before is dropped): a caller merging many sketches one at
// a time, such as a union, allocates once. It returns f, or nil for the
// empty sketch.
func DecodeDDFlatInto(f *DDFlat, b []byte) (*DDFlat, error) {
	f.Zero = 0
	for _, fb := range []*FlatBins{&f.Pos, &f.Neg} {
		fb.Index, fb.Count, fb.Lo, fb.Hi = fb.Index[:0], fb.Count[:0], 0, 0
	}
	mapped := false
	for len(b) > 0 {
		flag, err := enc.DecodeFlag(&b)
		if err != nil {
			return nil, err
		}
		switch flag.Type() {
		case enc.FlagTypePositiveStore:
			err = decodeFlatBins(&b, flag.SubFlag(), &f.Pos)
		case enc.FlagTypeNegativeStore:
			err = decodeFlatBins(&b, flag.SubFlag(), &f.Neg)
		case enc.FlagTypeIndexMapping:
			// The flag byte was read: compare it and the mapping's bytes.
			n := len(ddMappingBytes) - 1
			if flag != enc.FlagIndexMappingBaseLogarithmic || len(b) < n || !bytes.Equal(b[:n], ddMappingBytes[1:]) {
				return nil, errors.New("quantile sketch has another index mapping")
			}
			b = b[n:]
			mapped = true
		default:
			if flag != enc.FlagZeroCountVarFloat {
				return nil, fmt.Errorf("quantile sketch has an unknown part (flag %v)", flag)
			}
			var z float64
			z, err = enc.DecodeVarfloat64(&b)
			if err == nil && (!(z >= 0) || math.IsInf(z, 0)) {
				err = fmt.Errorf("quantile sketch has a zero count of %g", z)
			}
			f.Zero += z
		}
		if err != nil {
			return nil, err
		}
	}
	if !mapped {
		return nil, errors.New("quantile sketch has no index mapping")
	}
	if n := f.Count(); math.IsInf(n, 0) || math.IsNaN(n) {
		return nil, fmt.Errorf("quantile sketch has a count of %g", n)
	}
	if f.Zero == 0 && len(f.Pos.Index) == 0 && len(f.Neg.Index) == 0 {
		return nil, nil
	}
	return f, nil
}

// decodeFlatBins reads one store's bins (the library's three bin
// encodings) and appends those with a count to dst.
func decodeFlatBins(b *[]byte, mode enc.SubFlag, dst *FlatBins) error {
	n, err := enc.DecodeUvarint64(b)
	if err != nil {
		return err
	}
	if n > uint64(len(*b)) { // every bin takes at least a byte
		return fmt.Errorf("quantile sketch claims %d bins in %d bytes", n, len(*b))
	}
	if dst.Index == nil {
		dst.Index, dst.Count = make([]int32, 0, n), make([]float64, 0, n)
	}
	add := func(index int64, count float64) error {
		if err := checkBin(index, count); err != nil {
			return err
		}
		if count == 0 {
			return nil
		}
		i := int32(index)
		if len(dst.Index) == 0 {
			dst.Lo, dst.Hi = i, i
		}
		dst.Lo, dst.Hi = min(dst.Lo, i), max(dst.Hi, i)
		dst.Index = append(dst.Index, i)
		dst.Count = append(dst.Count, count)
		return nil
	}
	switch mode {
	case enc.BinEncodingIndexDeltasAndCounts, enc.BinEncodingIndexDeltas:
		var index int64
		for i := uint64(0); i < n; i++ {
			d, err := enc.DecodeVarint64(b)
			if err != nil {
				return err
			}
			index += d
			count := 1.0
			if mode == enc.BinEncodingIndexDeltasAndCounts {
				if count, err = enc.DecodeVarfloat64(b); err != nil {
					return err
				}
			}
			if err := add(index, count); err != nil {
				return err
			}
		}
	case enc.BinEncodingContiguousCounts:
		index, err := enc.DecodeVarint64(b)
		if err != nil {
			return err
		}
		d, err := enc.DecodeVarint64(b)
		if err != nil {
			return err
		}
		for i := uint64(0); i < n; i++ {
			count, err := enc.DecodeVarfloat64(b)
			if err != nil {
				return err
			}
			if err := add(index, count); err != nil {
				return err
			}
			index += d
		}
	default:
		return errors.New("quantile sketch has an unknown bin encoding")
	}
	return nil
}

func checkBin(index int64, count float64) error {
	if index < int64(ddIndexLo) || index > int64(ddIndexHi) || !(count >= 0) || math.IsInf(count, 0) {
		return fmt.Errorf("quantile sketch has a bin %d of count %g, outside what the mapping writes", index, count)
	}
	return nil
}
