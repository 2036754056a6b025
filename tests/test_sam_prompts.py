"""Prompts: parsing, the checks that refuse bad ones, and the grouping into objects."""

import numpy as np
import pytest

from ovseg.sam.prompts import MAX_POINTS, PromptError, make_prompts, parse_prompts


def test_points_and_boxes_parse_with_labels():
    prompts = parse_prompts("10,20; 30.5,40,0", "1,2,50,60", image_size=(100, 80))
    assert prompts.points.tolist() == [[10, 20], [30.5, 40]]
    assert prompts.point_labels.tolist() == [1, 0]
    assert prompts.boxes.tolist() == [[1, 2, 50, 60]]


def test_one_box_takes_the_points_several_boxes_do_not():
    one = make_prompts([[5, 5], [9, 9]], [1, 0], [[0, 0, 20, 20]])
    objects = one.objects()
    assert len(objects) == 1 and objects[0].box is not None and len(objects[0].points) == 2
    two = make_prompts([[5, 5]], None, [[0, 0, 20, 20], [10, 10, 30, 30]])
    objects = two.objects()
    assert [o.box is not None for o in objects] == [True, True, False]
    assert objects[2].points.tolist() == [[5, 5]]
    assert objects[2].describe() == "positive point at 5,5"
    assert objects[0].describe() == "box 0,0,20,20"


@pytest.mark.parametrize(
    ("points", "boxes", "expected"),
    [
        ("200,10", None, "outside the 80x100 image"),
        ("80,10", None, "outside"),  # x = width is past the last column
        (None, "0,0,81,10", "reaches outside"),
        (None, "10,10,5,20", "x1 > x0"),
        (None, "10,10,20,10", "y1 > y0"),
        ("nan,3", None, "NaN"),
        ("inf,3", None, "NaN or infinite"),
        ("-1,3", None, "negative coordinate"),
        ("3", None, "has 1 numbers"),
        ("a,b", None, "not numbers"),
        ("3,4,2", None, "labels must be 1"),
        ("3,4,0", None, "only negative points"),
        (None, None, "no prompt"),
        (";".join(["1,1"] * (MAX_POINTS + 1)), None, "too many prompts"),
    ],
)
def test_bad_prompts_are_refused_with_one_clear_line(points, boxes, expected):
    with pytest.raises(PromptError) as error:
        parse_prompts(points, boxes, image_size=(100, 80))
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_a_negative_point_may_refine_a_single_box():
    prompts = make_prompts([[5, 5]], [0], [[0, 0, 20, 20]])
    assert prompts.objects()[0].point_labels.tolist() == [0]


def test_array_prompts_check_shapes():
    with pytest.raises(PromptError, match="shape"):
        make_prompts(np.zeros((2, 3)))
    with pytest.raises(PromptError, match="2 point labels for 1 points"):
        make_prompts([[1, 2]], [1, 0])
