"""The one band matching rule (issue 24): bands are identified by (sensor, name) and compared by
wavelength within bandwidth; a name two sensors use for different wavelengths never matches by
itself. One table, run through :func:`geofm_hf.bands.match_bands` and through each caller:
the classification recipes' :func:`map_dataset_bands` and the inference tools' scene matching."""

from __future__ import annotations

import pytest

from geofm_hf.bands import SENSORS, BandMatchError, BandSet, match_bands, unknown_band_names
from geofm_hf.classification import BandMismatchError, map_dataset_bands
from geofm_hf.classification.bands import dataset_band_table

S2 = [b.name for b in SENSORS["sentinel2-l1c"]]
L7_WL = [0.66, 0.835, 1.65]  # Landsat 7 ETM+ B3, B4, B5 (red, NIR, SWIR 1.6)

# id: (model bands, model wavelengths, input bands, input sensor,
#      expected input index per model band, or the words of the error)
CASES = {
    # Landsat 8 B3/B4/B5 are green/red/NIR: the Landsat 7 model's red takes L8 B4, its NIR L8 B5,
    # and nothing of L8 is at 1.65 um. By bare name all three would have matched.
    "l7_model_l8_same_names": (["B3", "B4", "B5"], L7_WL, ["B3", "B4", "B5"], "landsat8",
                               [1, 2, None]),
    "l7_model_l8_by_wavelength": (["B3", "B4", "B5"], L7_WL, ["B4", "B5", "B6"], "landsat8",
                                  [0, 1, 2]),
    "l7_model_unknown_sensor": (["B3", "B4", "B5"], L7_WL, ["B3", "B4", "B5"], None,
                                ["could be any of several bands", "--sensor", "landsat8-oli"]),
    "s2_model_l7_scene": (S2, None, ["B3", "B4", "B5"], "landsat7",
                          [None, None, None, 0, None, None, None, 1, None, None, None, 2, None]),
    "s2_names_identify_s2": (["B02", "B8A"], None, ["B8A", "B02"], None, [1, 0]),
    "bare_number_is_not_s2": (["B05"], None, ["B5"], None, [None]),
    "colour_alias_by_wavelength": (["B04", "B03", "B02"], None, ["blue", "green", "red"], None,
                                   [2, 1, 0]),
    "names_no_table_spells": (["VV", "VH"], None, ["VH", "VV"], None, [1, 0]),
    "one_input_band_per_model_band": (["B08", "B8A"], None, ["B5"], "landsat8", [None, 0]),
    "placeholders_never_match": (["B1", "B2", "B3"], None, unknown_band_names(3), None,
                                 ["names none of its bands", "--band-names"]),
    "model_without_wavelengths_ambiguous": (["B3", "B4"], None, ["B3", "B4"], "landsat7",
                                            ["of the model", "wavelengths_um"]),
}  # fmt: skip


def _sets(model, model_wl, inp, sensor):
    target = BandSet.of(model, wavelengths_um=model_wl, label="the model",
                        hint="record its bands' wavelengths in its config (wavelengths_um)")  # fmt: skip
    named = not inp[0].startswith("band_")
    source = BandSet.of(inp, sensor, named=named, hint="pass --sensor")
    return target, source


@pytest.mark.parametrize("case", CASES)
def test_match_bands_table(case):
    model, model_wl, inp, sensor, expected = CASES[case]
    target, source = _sets(model, model_wl, inp, sensor)
    if isinstance(expected[0], str):
        with pytest.raises(BandMatchError) as err:
            match_bands(target, source)
        for word in expected:
            assert word in str(err.value), (case, str(err.value))
    else:
        assert match_bands(target, source) == expected


@pytest.mark.parametrize("case", CASES)
def test_classification_delegates_to_the_rule(case):
    """The recipes' map_dataset_bands (each dataset band -> the model's name for it) gives the
    rule's answer, and refuses what the rule refuses."""
    model, model_wl, inp, sensor, _ = CASES[case]
    table = dataset_band_table(inp, sensor=sensor)
    try:
        target, source = _sets(model, model_wl, inp, sensor)
        inverse = match_bands(source, target)  # for each input band, the model band
    except BandMatchError:
        inverse = None
    if inverse is None or None in inverse:
        with pytest.raises(BandMismatchError):
            map_dataset_bands(inp, model, dataset_table=table, model_wavelengths=model_wl)
    else:
        mapped = map_dataset_bands(inp, model, dataset_table=table, model_wavelengths=model_wl)
        assert mapped == [model[i] for i in inverse]
