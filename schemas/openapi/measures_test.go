package openapi

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandem-analytics/tandem/schemas"
)

// TestMeasureTypesAreTheKinds: the document's measure types (MeasureInfo.
// type) are the registered measure kinds, in table order, so a type added
// to schemas' table is not missing from the API's description.
func TestMeasureTypesAreTheKinds(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas struct {
				MeasureInfo struct {
					Properties struct {
						Type struct {
							Enum []string `json:"enum"`
						} `json:"type"`
					} `json:"properties"`
				} `json:"MeasureInfo"`
			} `json:"schemas"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal(Document(), &doc))
	var kinds []string
	for _, k := range schemas.MeasureKinds() {
		kinds = append(kinds, string(k.Type))
	}
	require.Equal(t, kinds, doc.Components.Schemas.MeasureInfo.Properties.Type.Enum)
}
