import numpy as np
import pytest

from phdlspec_app import labels as L


def test_schema_has_the_32_labels_in_order():
    names = L.label_names()
    assert len(names) == 32 == len(L.LABELS)
    assert names[:6] == ["teff", "logg", "vmic", "vbroad", "rv", "fe_h"]
    expected = ["C", "N", "O", "Na", "Mg", "Al", "Si", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Co",
                "Ni", "Cu", "Zn", "Sr", "Y", "Zr", "Ba", "La", "Ce", "Nd", "Eu"]
    assert names[6:] == [f"{s.lower()}_fe" for s in expected]
    assert len(set(names)) == 32


def test_each_abundance_label_knows_its_element():
    z = {lab.element.symbol: lab.element.Z for lab in L.abundance_labels()}
    assert z["Fe"] == 26 and z["Mg"] == 12 and z["Eu"] == 63 and z["K"] == 19 and z["Nd"] == 60
    assert len(L.abundance_labels()) == 27
    xfe = [lab.name for lab in L.xfe_labels()]
    assert len(xfe) == 26 and "fe_h" not in xfe and all(n.endswith("_fe") for n in xfe)
    assert xfe == [lab.name for lab in L.abundance_labels()][1:]  # schema order, after [Fe/H]
    assert {lab.element.symbol for lab in L.LABELS if lab.element and lab.element.alpha} == {"O", "Mg", "Si", "Ca", "Ti"}
    assert L.get_label("teff").element is None


def test_units_ranges_defaults_groups_are_consistent():
    for lab in L.LABELS:
        assert lab.lo < lab.default < lab.hi
        assert 0 < lab.step < (lab.hi - lab.lo) / 10
        assert lab.group in L.GROUPS
        assert lab.unit in ("K", "dex", "km/s")
    assert L.get_label("teff").unit == "K"
    assert {lab.group for lab in L.LABELS} == set(L.GROUPS)
    assert L.get_label("ba_fe").group == "neutron-capture"
    assert L.get_label("mn_fe").group == "Fe-peak"


@pytest.mark.parametrize("alias,name", [
    ("TEFF", "teff"), ("LOGG", "logg"), ("FE_H", "fe_h"), ("[Fe/H]", "fe_h"), ("M_H", "fe_h"),
    ("MG_FE", "mg_fe"), ("[Mg/Fe]", "mg_fe"), ("mg_fe", "mg_fe"), ("Eu/Fe", "eu_fe"), ("vsini", "vbroad"),
    ("vturb", "vmic"), ("feh", "fe_h"),
])
def test_canonical_names(alias, name):
    assert L.canonical_name(alias) == name


def test_unknown_label_is_a_clear_error():
    with pytest.raises(L.LabelError, match="unknown label 'xx_fe'"):
        L.canonical_name("xx_fe")


def test_vector_dict_table_round_trip():
    vec = L.to_vector({"teff": 4500, "[Mg/Fe]": 0.3, "logg": 2.0})
    assert vec.shape == (32,)
    assert vec[L.get_label("mg_fe").index] == 0.3
    assert vec[L.get_label("ca_fe").index] == 0.0  # default filled
    d = L.to_dict(vec)
    assert d["teff"] == 4500 and d["logg"] == 2.0
    arr = np.vstack([vec, L.defaults()])
    table = L.to_table(arr, obsid=[1, 2])
    assert table.colnames[0] == "obsid" and table.colnames[1:] == L.label_names()
    assert str(table["teff"].unit) == "K"
    back = L.from_table(table)
    np.testing.assert_array_equal(back, arr)
    partial = L.to_vector({"teff": 5000}, fill_defaults=False)
    assert np.isnan(partial[1]) and partial[0] == 5000


def test_from_table_accepts_catalog_columns_and_rejects_duplicates():
    from astropy.table import Table

    t = Table({"TEFF": [4800.0], "LOGG": [2.5], "MG_FE": [0.2], "APOGEE_ID": ["x"]})
    arr = L.from_table(t)
    assert arr[0, 0] == 4800.0 and arr[0, L.get_label("mg_fe").index] == 0.2
    with pytest.raises(L.LabelError, match="both map"):
        L.from_table(Table({"TEFF": [1.0], "teff": [2.0]}))


def test_check_in_range():
    vec = L.defaults()
    assert L.check_in_range(vec).all()
    vec[0] = 20000
    ok = L.check_in_range(vec)
    assert not ok[0] and ok[1:].all()
