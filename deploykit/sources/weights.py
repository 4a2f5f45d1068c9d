"""Weights going into a reference: a checkpoint (reported with its absolute path and sha256) or, loudly,
seeded random weights with non-trivial normalisation statistics."""

from __future__ import annotations

from pathlib import Path


def seeded(reference, seed: int) -> dict:
    from deploykit.blocks.init import randomize_for_verification

    randomize_for_verification(reference, seed=seed)
    return {"path": None, "seeded_random": True, "seed": seed,
            "note": f"no weights given: SEEDED RANDOM WEIGHTS (seed {seed}) with non-trivial normalisation "
                    "statistics, so parity is meaningful; the exported model has not learned anything"}


def from_checkpoint(reference, path: str, load) -> dict:
    """Load `path` with `load(module, path) -> LoadReport`; the report names the file by absolute path and hash."""
    from deploykit.repository import sha256_file

    report = load(reference, path)
    resolved = Path(path).resolve()
    return {"path": str(resolved), "sha256": sha256_file(resolved), "seeded_random": False,
            "converted_by": report.converted_by, "stripped_prefix": report.stripped_prefix,
            "nested_key": report.nested_key}


def load_into(reference, weights: str | None, seed: int, load=None) -> dict:
    if load is None:
        from deploykit.blocks.checkpoints import load_checkpoint as load
    return from_checkpoint(reference, weights, load) if weights else seeded(reference, seed)


def exported_twin(reference, variant: str, create_safe):
    """The module to export: the reference itself, or for variant "safe" the export-safe twin made by
    `create_safe()` carrying the reference's weights exactly (strict: a missing or extra key is a bug)."""
    reference.eval()
    if variant != "safe":
        return reference
    exported = create_safe()
    exported.load_state_dict(reference.state_dict(), strict=True)
    return exported.eval()


def describe(report: dict) -> str:
    """One console line: which weights went in."""
    if report.get("seeded_random", report.get("path") is None):
        seed = f" (seed {report['seed']})" if "seed" in report else ""
        return f"weights: SEEDED RANDOM{seed}, not a trained model; pass --weights to export yours"
    extra = [f"nested key '{report['nested_key']}'" if report.get("nested_key") else "",
             f"stripped prefix '{report['stripped_prefix']}'" if report.get("stripped_prefix") else "",
             f"converted by {', '.join(report['converted_by'])}" if report.get("converted_by") else ""]
    extra = [e for e in extra if e]
    if report.get("state_dict_sha256"):
        return f"weights: the live module's own (state dict sha256 {report['state_dict_sha256'][:12]})"
    sha = report.get("sha256")
    return (f"weights: {report['path']}" + (f" (sha256 {sha[:12]})" if sha else "")
            + (f"; {'; '.join(extra)}" if extra else ""))


def live_weights(module) -> dict:
    """The weights of a module handed over in Python: named by the sha256 of its state dict."""
    import hashlib

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return {"path": None, "seeded_random": False, "state_dict_sha256": digest.hexdigest(),
            "note": "the weights the live module carried when deploykit.export was called"}
