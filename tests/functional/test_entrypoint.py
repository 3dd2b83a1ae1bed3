"""The extension is found through its ``salt.loader`` entry point, with no extension_modules."""


def test_minion_opts_have_no_extension_modules_pointing_at_us(minion_opts):
    assert "saltext_fleet" not in str(minion_opts.get("extension_modules", ""))
    assert not minion_opts.get("module_dirs")
