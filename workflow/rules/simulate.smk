rule simulate_sweeps:
    """Simulated crystal + background sweeps with known truth (the built-in demo data)."""
    output:
        crystal="resources/simulated/{sim}/crystal/sweep.expt",
        background="resources/simulated/{sim}/background/sweep.expt",
        truth="resources/simulated/{sim}/truth.json",
    params:
        args=lambda wc: simulation_args(wc.sim),
    log:
        "logs/simulate_sweeps/{sim}.log",
    benchmark:
        "benchmarks/simulate_sweeps/{sim}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python {SCRIPTS}/simulate_sweep.py resources/simulated/{wildcards.sim} "
        "{params.args} > {log} 2>&1"


def simulation_args(sim):
    s = config["simulations"][sim]
    args = [f"--preset {s['preset']}", f"--seed {s['seed']}"]
    if "size" in s:
        args.append(f"--size {s['size'][0]} {s['size'][1]}")
    for key, flag in (("frames", "--frames"), ("osc", "--osc"), ("bkg_frames", "--bkg_frames")):
        if key in s:
            args.append(f"{flag} {s[key]}")
    if s.get("compress"):
        args.append(f"--compress {s['compress']}")
    return " ".join(args)
