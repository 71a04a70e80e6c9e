"""Resume an optimizer whose parameters moved: match the saved state to the current parameters by name.

torch's `Optimizer.load_state_dict` pairs saved and current parameters by position. zir's parameter groups
carry each parameter's name (`names`, from `ZirModel.param_groups`), so a checkpoint written before a
parameter moved (iBOT's and SimMIM's mask token went from `objectives.<name>.mask_token` to the tower's
`towers.<tower>.mask_token`) is matched by name instead, and the moments follow their own parameter.
"""

from __future__ import annotations

import re

import torch

_OLD_MASK_TOKEN = re.compile(r"^objectives\.[^.]+\.mask_token$")
_NEW_MASK_TOKEN = re.compile(r"^towers\.[^.]+\.mask_token$")


def align_optimizer_state(saved: dict, optimizer: torch.optim.Optimizer) -> dict:
    """`saved` reordered to `optimizer`'s current parameter order, matching parameters by name.

    Returned unchanged when it already matches, when either side has no names, or when the group
    counts differ (then torch's own check reports it). A current parameter without saved state starts fresh.
    """
    groups, current = saved.get("param_groups", []), optimizer.param_groups
    if len(groups) != len(current) or not all("names" in g for g in [*groups, *current]):
        return saved
    if [list(g["names"]) for g in groups] == [list(g["names"]) for g in current]:
        return saved
    wanted = {name for g in current for name in g["names"]}
    index: dict[str, int] = {}
    for group in groups:
        for name, idx in zip(group["names"], group["params"]):
            index[name] = idx
    _rename_moved_mask_tokens(index, wanted)
    state, new_groups, next_id = {}, [], 0
    for old, now in zip(groups, current):
        ids = []
        for name in now["names"]:
            idx = index.get(name)
            if idx is not None and idx in saved["state"]:
                state[next_id] = saved["state"][idx]
            ids.append(next_id)
            next_id += 1
        new_groups.append({**old, "params": ids, "names": list(now["names"])})
    return {"state": state, "param_groups": new_groups}


def _rename_moved_mask_tokens(index: dict[str, int], wanted: set[str]) -> None:
    """Map an objective's old mask-token name to the one tower mask token that has no saved state."""
    old = [n for n in index if _OLD_MASK_TOKEN.match(n) and n not in wanted]
    new = [n for n in wanted if _NEW_MASK_TOKEN.match(n) and n not in index]
    if len(old) == 1 and len(new) == 1:
        index[new[0]] = index.pop(old[0])
