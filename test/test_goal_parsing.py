"""Tests of goal-string parsing (zs_perception.segmentation.prompting.parse_goal)."""

import pytest

from zs_perception.segmentation.prompting import parse_goal


def test_splits_on_commas_and_semicolons_and_strips():
    goal = parse_goal('  red mug ,screwdriver;  blue   box ', max_prompts=10, max_chars=50)
    assert goal.phrases == ['red mug', 'screwdriver', 'blue box']
    assert goal.dropped == [] and goal.truncated == []
    assert goal.warning() == ''


@pytest.mark.parametrize('text', ['', '   ', ',', ' ; , ;'])
def test_empty_goal_gives_no_phrases_and_no_warning(text):
    goal = parse_goal(text, max_prompts=10, max_chars=50)
    assert goal.phrases == [] and goal.warning() == ''


def test_trailing_and_double_separators_are_ignored():
    assert parse_goal('mug,,box,', 10, 50).phrases == ['mug', 'box']


def test_duplicates_ignoring_case_are_dropped():
    goal = parse_goal('Mug, mug, MUG ,box', max_prompts=10, max_chars=50)
    assert goal.phrases == ['Mug', 'box']
    assert goal.dropped == [('mug', 'duplicate'), ('MUG', 'duplicate')]
    assert 'dropped 2 phrases (duplicate)' in goal.warning()


def test_non_printable_characters_become_spaces():
    goal = parse_goal('red\x00mug,\tbox\n, \x07', max_prompts=10, max_chars=50)
    assert goal.phrases == ['red mug', 'box']
    assert goal.dropped == [(' \x07', 'only non-printable characters')]


def test_long_phrase_is_cut_at_a_word_boundary():
    goal = parse_goal('a very long phrase indeed', max_prompts=10, max_chars=12)
    assert goal.phrases == ['a very long']
    assert goal.truncated[0][0] == 'a very long phrase indeed'
    assert 'max_prompt_chars=12' in goal.warning()
    assert parse_goal('abcdefghij', 10, 4).phrases == ['abcd']
    assert parse_goal('abcd efgh', 10, 4).phrases == ['abcd']


def test_ten_thousand_character_goal_is_cut_with_a_short_warning():
    text = 'x' * 10_000
    goal = parse_goal(text, max_prompts=32, max_chars=200)
    assert goal.phrases == ['x' * 200]
    warning = goal.warning()
    assert 'cut 1 phrase (longer than max_prompt_chars=200)' in warning
    assert len(warning) < 300


def test_five_hundred_phrases_keep_the_first_ones_and_say_how_many_were_dropped():
    text = ','.join(f'thing {i}' for i in range(500))
    goal = parse_goal(text, max_prompts=32, max_chars=200)
    assert goal.phrases == [f'thing {i}' for i in range(32)]
    assert len(goal.dropped) == 468
    warning = goal.warning()
    assert 'using 32 phrase(s)' in warning
    assert 'dropped 468 phrases (over max_prompts=32)' in warning
    assert "'thing 32'" in warning and 'and 465 more' in warning
    assert len(warning) < 300


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='must be a string'):
        parse_goal(None, 10, 10)
    with pytest.raises(ValueError, match='at least 1'):
        parse_goal('mug', 0, 10)
