"""Scratch mutation audit of the engine tests: apply each realistic bug to a copy of the repository
(``git archive HEAD | tar -x -C /tmp/eng/mut``), run the engine tests there, report CAUGHT/MISSED.
Nothing here is applied to the working tree."""
import subprocess, sys, shutil, pathlib
R = pathlib.Path("/tmp/eng/mut")
M = [
 ("M1 displacement without grid spacing", "DeepRegLib/transforms.py", "np.stack([f[2] * sp[0], f[1] * sp[1], f[0] * sp[2]], axis=-1)", "np.stack([f[2], f[1], f[0]], axis=-1)"),
 ("M2 x and z flow components swapped", "DeepRegLib/transforms.py", "np.stack([f[2] * sp[0], f[1] * sp[1], f[0] * sp[2]], axis=-1)", "np.stack([f[0] * sp[0], f[1] * sp[1], f[2] * sp[2]], axis=-1)"),
 ("M3 taper removed from register()", "DeepRegLib/inference.py", "disp = tr.taper_border(tr.flow_to_displacement(flow, prep.grid))", "disp = tr.flow_to_displacement(flow, prep.grid)"),
 ("M4 foreground box axes in (k, j, i) order", "DeepRegLib/preprocess.py", "lower = [idx[2][0], idx[1][0], idx[0][0]]", "lower = [idx[0][0], idx[1][0], idx[2][0]]"),
 ("M5 cascade composition order swapped", "DeepRegLib/models/cascade.py", "total = flow if total is None else compose(total, flow)", "total = flow if total is None else compose(flow, total)"),
 ("M6 cascade warps moving by the last flow", "DeepRegLib/models/cascade.py", "warped = warp(moving_p, total)", "warped = warp(moving_p, flow)"),
 ("M7 qa Jacobian component order", "DeepRegLib/qa.py", "np.stack([field[..., 2] / sp[2], field[..., 1] / sp[1], field[..., 0] / sp[0]])", "np.stack([field[..., 0] / sp[0], field[..., 1] / sp[1], field[..., 2] / sp[2]])"),
 ("M8 RegistrationResult.jacobian_determinant component order", "DeepRegLib/inference.py", "flow = torch.from_numpy(np.stack([self.displacement[..., 2] / self.grid.spacing[2],", "flow = torch.from_numpy(np.stack([self.displacement[..., 0] / self.grid.spacing[0],"),
 ("M9 integrate_velocity returns the velocity", "DeepRegLib/spatial.py", "    flow = velocity / (2 ** steps)\n", "    return velocity\n"),
]
tests = sys.argv[1:] or ["Testing/engine/test_pipeline_known_answer.py", "Testing/test_cascade.py", "Testing/test_foreground.py",
         "Testing/engine/test_spatial.py", "Testing/engine/test_jacobians.py", "Testing/test_conventions.py", "Testing/test_golden.py"]
for name, f, old, new in M:
    p = R / f
    orig = p.read_text()
    if name.startswith("M8"):
        assert "self.displacement[..., 0] / self.grid.spacing[0]])" in orig
        mutated = orig.replace("flow = torch.from_numpy(np.stack([self.displacement[..., 2] / self.grid.spacing[2],", "flow = torch.from_numpy(np.stack([self.displacement[..., 0] / self.grid.spacing[0],").replace("self.displacement[..., 0] / self.grid.spacing[0]])", "self.displacement[..., 2] / self.grid.spacing[2]])")
    else:
        assert orig.count(old) >= 1, name
        mutated = orig.replace(old, new)
    p.write_text(mutated)
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=R,
                           env={"PYTHONPATH": str(R), "PATH": "/usr/bin:/bin", "HOME": "/tmp"}, capture_output=True, text=True)
        failed = [l for l in r.stdout.splitlines() if l.startswith("FAILED")]
        print(f"{name}: {'CAUGHT' if r.returncode != 0 else 'MISSED'} ({len(failed)} failing)", flush=True)
        for l in failed[:6]:
            print("    ", l[:160], flush=True)
    finally:
        p.write_text(orig)
