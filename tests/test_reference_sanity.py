import pytest
from backend_cases import ODD_CASES, assert_matches_reference


@pytest.mark.parametrize("case", ODD_CASES)
def test_reference_matches_itself(case):
    assert_matches_reference("reference", case)
