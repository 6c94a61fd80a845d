"""What the normalizer returns (pydantic, so the CLI, API and UI serialize them as they are)."""

from __future__ import annotations

from pydantic import BaseModel


class NormalizedName(BaseModel):
    """One ranked standard name for a query."""

    rank: int
    standard_name: str  # the 標準病名 cell as in the file ("嘔気，嘔吐症" stays one unit; "-1" = none)
    standard_names: list[str]  # the cell split on "，", empty parts dropped ([] for "-1")
    # A composite cell the dictionary does not hold (assembled from two names found in the query) has one
    # supporting entry per name: icd10 joins their codes with "," and surface their surfaces with "，"
    # (as the dictionary writes a composite's row); node_id is the first name's entry.
    icd10: str  # ICD-10 cell of the supporting entry, "-1" when none
    level: str
    surface: str  # the dictionary surface form that best supports this name
    score: float
    node_id: str  # ManbyoEntry.node_id of that supporting entry


class Mention(BaseModel):
    """A disease mention found in free text; offsets index the ORIGINAL text."""

    start: int
    end: int
    text: str
    surface: str
    candidates: list[NormalizedName]
    #: The text says the disease is absent (…なし, 認めず, 否定, 陰性, 除外, …(-)).
    negated: bool = False
    #: The text says the disease is suspected (…疑い, …の可能性, 否定できない, r/o …).
    suspected: bool = False
    #: The finding is a relative's, not the patient's (家族歴：父 胃癌, 母に糖尿病あり, 糖尿病の家族歴).
    family: bool = False
    #: The note files the finding as past history (既往歴：胃潰瘍, 胃潰瘍の既往, 胃癌術後, 10年前に胃癌).
    historical: bool = False
    #: The text only supposes the finding: a condition, prevention, a risk (発熱時は再診, 胸痛があれば, 肺炎予防).
    hypothetical: bool = False

    def flags(self) -> dict[str, bool]:
        """The flags by name, for the records that carry them on (a linked disease, a dictionary row,
        a ``--json`` line): a flag added here reaches them all."""
        return {name: getattr(self, name) for name in FLAGS}


#: The flags a mention carries, in the order the CLI shows them.
FLAGS = ("negated", "suspected", "family", "historical", "hypothetical")
