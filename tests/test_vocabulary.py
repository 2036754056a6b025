"""Vocabulary files, command-line class lists, seen masks and prompt templates (spec s.3, s.7)."""

import pytest

from ovseg.vocabulary import (
    SHIPPED_VOCABULARIES,
    Vocabulary,
    as_vocabulary,
    builtin_vocabularies,
    load_templates,
    load_vocabulary,
    parse_class_list,
    parse_vocabulary_text,
    seen_class_mask,
    split_synonyms,
)

VILD = [
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
]

# name -> (number of classes, number of thing classes or None when not checked)
SHIPPED = {
    "coco_panoptic": (133, 80),
    "ade20k_150": (150, 100),
    "ade20k_847": (847, None),
    "pascal_context_59": (59, None),
    "pascal_context_459": (459, None),
    "pascal_voc_21": (21, 20),
    "cityscapes": (19, 8),
    "lvis": (1203, 1203),
    "synthetic_world": (19, 14),
    "synthetic_world_base": (14, 10),
}


@pytest.fixture(scope="module")
def coco():
    return load_vocabulary("coco_panoptic")


# ---------------------------------------------------------------------------------------------
# files


def test_parse_file_kinds_comments_and_synonyms():
    text = (
        "# a comment line\n"
        "thing\tperson, child,kid\n"
        "\n"
        "   # an indented comment\n"
        "stuff\tsky, clouds\r\n"
        "THING\tzebra\n"
    )
    vocab = parse_vocabulary_text(text, name="mine")
    assert vocab.name == "mine"
    assert vocab.classes == (("person", "child", "kid"), ("sky", "clouds"), ("zebra",))
    assert vocab.is_thing == (True, False, True)
    assert vocab.names == ["person", "sky", "zebra"]
    assert vocab.num_synonyms == [3, 2, 1]
    assert vocab.synonyms == ["person", "child", "kid", "sky", "clouds", "zebra"]
    assert len(vocab) == 3


def test_parse_file_without_kind_guesses_from_known_stuff():
    vocab = parse_vocabulary_text("sky\nzebra\nwall, walls\n")
    # "sky" and "wall" are stuff in COCO / ADE20K, "zebra" is not
    assert vocab.is_thing == (False, True, False)


def test_parse_file_rejects_unknown_kind_and_empty():
    with pytest.raises(ValueError, match="line 2"):
        parse_vocabulary_text("thing\tcat\nanimal\tdog\n")
    with pytest.raises(ValueError):
        parse_vocabulary_text("# only a comment\n\n")
    with pytest.raises(ValueError, match="line 1"):
        parse_vocabulary_text("thing\t , \n")


def test_split_synonyms_official_rule():
    # ", " becomes "," before the split, so "a, b" and "a,b" are the same two synonyms
    assert split_synonyms("traffic light, stop light,signal") == (
        "traffic light",
        "stop light",
        "signal",
    )
    assert split_synonyms("person/child", "/") == ("person", "child")


def test_load_vocabulary_from_a_file_path(tmp_path):
    path = tmp_path / "my_classes.txt"
    path.write_text("thing\tcafé, 猫\nstuff\tgrass\n", encoding="utf-8")
    vocab = load_vocabulary(path)
    assert vocab.name == "my_classes"
    assert vocab.classes == (("café", "猫"), ("grass",))


def test_load_vocabulary_unknown_name_lists_choices():
    with pytest.raises(FileNotFoundError, match="coco, ade150, ade847") as error:
        load_vocabulary("no_such_vocabulary_name")
    assert "pass a list" not in str(error.value)
    with pytest.raises(FileNotFoundError, match=r'pass a list: \["cat", "dog"\]'):
        load_vocabulary("cat, dog")


@pytest.mark.parametrize(
    "entries, classes",
    [
        (["traffic cone, pylon", "sky"], (("traffic cone", "pylon"), ("sky",))),
        (["traffic cone/pylon", "sky"], (("traffic cone", "pylon"), ("sky",))),
        ([["traffic cone", "pylon"], "sky"], (("traffic cone", "pylon"), ("sky",))),
        ((("AC/DC poster",), " zebra "), (("AC/DC poster",), ("zebra",))),
        (["cat"], (("cat",),)),
    ],
)
def test_a_python_list_has_one_class_per_entry(entries, classes):
    """A list element is one class: commas inside it separate synonyms, never classes."""
    vocab = as_vocabulary(entries)
    assert vocab.classes == classes
    assert len(vocab.is_thing) == len(classes)


@pytest.mark.parametrize(
    "entries, message",
    [
        ([], "empty"),
        (["cat", " , "], "entry 2 has no class name"),
        (["cat", 3], "entry 2 is 3"),
        (["cat", "dog/Cat"], "given twice"),
    ],
)
def test_a_bad_python_list_is_refused(entries, message):
    with pytest.raises(ValueError, match=message):
        as_vocabulary(entries)


def test_the_shipped_vocabularies_are_listed_once():
    """Every vocabulary file (but the synthetic world's training half) is in the one list
    that the command line's help and the web demo's presets are made from."""
    from ovseg.apps.predict import build_parser
    from ovseg.apps.web import preset_choices

    stems = {stem for stem, _ in SHIPPED_VOCABULARIES.values()}
    assert set(builtin_vocabularies()) - stems == {"synthetic_world_base"}
    presets = [name for name in preset_choices().values() if name is not None]
    assert presets == list(SHIPPED_VOCABULARIES)
    help_text = " ".join(build_parser().format_help().split())
    assert f"({', '.join(SHIPPED_VOCABULARIES)})" in help_text
    for short, (stem, _) in SHIPPED_VOCABULARIES.items():
        assert load_vocabulary(short) == load_vocabulary(stem)


def test_load_vocabulary_rejects_non_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("thing\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="UTF-8"):
        load_vocabulary(path)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_vocabulary_loads(name):
    count, things = SHIPPED[name]
    vocab = load_vocabulary(name)
    assert len(vocab) == count
    if things is not None:
        assert sum(vocab.is_thing) == things
    for synonyms in vocab.classes:
        assert all(s and s == s.strip() and "," not in s for s in synonyms), synonyms


def test_shipped_list_is_complete():
    assert sorted(builtin_vocabularies()) == sorted(SHIPPED)


def test_aliases_and_coco_content(coco):
    assert load_vocabulary("coco").classes == coco.classes
    assert load_vocabulary("ade150").classes == load_vocabulary("ade20k_150").classes
    assert coco.names[0] == "person"
    assert "child" in coco.classes[0]
    # 80 things first, then 53 stuff (detectron2 contiguous order)
    assert coco.is_thing == (True,) * 80 + (False,) * 53


# ---------------------------------------------------------------------------------------------
# command-line class lists


def test_parse_class_list_synonyms_with_slash():
    vocab = parse_class_list("person/child, zebra")
    assert vocab.classes == (("person", "child"), ("zebra",))
    assert len(vocab) == 2
    spaced = parse_class_list(" traffic cone / pylon ,zebra ")
    assert spaced.classes == (("traffic cone", "pylon"), ("zebra",))


def test_parse_class_list_duplicates_rejected():
    with pytest.raises(ValueError, match="zebra"):
        parse_class_list("zebra, horse, zebra")
    with pytest.raises(ValueError, match="(?i)child"):
        parse_class_list("person/child, Child")  # same name up to case, as a synonym


@pytest.mark.parametrize("text", ["", "   ", ",", " , ,  ", "/", " / , / "])
def test_parse_class_list_empty_rejected(text):
    with pytest.raises(ValueError, match="empty"):
        parse_class_list(text)


@pytest.mark.parametrize(
    "text, message",
    [
        ("cat,,dog", "class 2 is empty"),
        ("cat, dog,", "class 3 is empty"),
        ("thing:, dog", "class 1 'thing:' has no name"),
        ("stuff: / , dog", "class 1 'stuff: /' has no name"),
        ("cat//kitty, dog", "class 1 .* has an empty synonym"),
    ],
)
def test_an_empty_name_inside_a_class_list_is_refused_not_dropped(text, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_class_list(text)
    assert "\n" not in str(caught.value)


def test_parse_class_list_unicode_kept():
    vocab = parse_class_list("café, 猫/ねこ, Ünïcødé thing")
    assert vocab.classes == (("café",), ("猫", "ねこ"), ("Ünïcødé thing",))
    assert vocab.synonyms == ["café", "猫", "ねこ", "Ünïcødé thing"]


def test_parse_class_list_kinds_guessed():
    vocab = parse_class_list("zebra, sky")
    assert vocab.is_thing == (True, False)


def test_vocabulary_dataclass_validates():
    with pytest.raises(ValueError):
        Vocabulary(classes=(), is_thing=())
    with pytest.raises(ValueError):
        Vocabulary(classes=(("a",),), is_thing=(True, False))
    with pytest.raises(ValueError, match="class 1"):
        Vocabulary(classes=(("a",), ("b", "")), is_thing=(True, True))


# ---------------------------------------------------------------------------------------------
# seen mask


def test_seen_class_mask_against_coco(coco):
    vocab = parse_class_list("zebra, traffic cone, kid/child, zebras/okapi, ZEBRA crossing")
    # exact string match on any synonym: "child" is a COCO person synonym, "zebras" a zebra one
    assert seen_class_mask(vocab, coco) == [True, False, True, True, False]
    # the match is case-sensitive like the official code, so "Zebra" is unseen
    capital = Vocabulary(classes=(("Zebra",), ("zebra ",)), is_thing=(True, True))
    assert seen_class_mask(capital, coco) == [False, False]


def test_seen_class_mask_coco_on_itself_all_seen(coco):
    assert all(seen_class_mask(coco, coco))


def test_seen_class_mask_ade_mixture(coco):
    ade = load_vocabulary("ade20k_150")
    seen = seen_class_mask(ade, coco)
    assert len(seen) == 150
    assert any(seen) and not all(seen)
    assert seen[ade.names.index("wall")] is True  # COCO has "wall" stuff classes


# ---------------------------------------------------------------------------------------------
# templates


def test_vild_templates_exact():
    assert load_templates("vild") == VILD


def test_templates_from_file_and_validation(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text("a {}\n\nthe {} here\n", encoding="utf-8")
    assert load_templates(good) == ["a {}", "the {} here"]
    bad = tmp_path / "bad.txt"
    bad.write_text("a {}\nno placeholder\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no placeholder"):
        load_templates(bad)
    with pytest.raises(FileNotFoundError):
        load_templates(tmp_path / "missing.txt")
