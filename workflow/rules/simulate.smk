rule simulate_sweeps:
    """Simulated crystal + background sweeps with known truth (the built-in demo data)."""
    input:
        script=script("simulate_sweep"),
    output:
        crystal="resources/simulated/{sim}/crystal/sweep.expt",
        background="resources/simulated/{sim}/background/sweep.expt",
        truth="resources/simulated/{sim}/truth.json",
    log:
        "logs/simulate_sweeps/{sim}.log",
    benchmark:
        "benchmarks/simulate_sweeps/{sim}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        args=lambda wc: simulation_args(wc.sim),
    shell:
        "python {input.script:q} resources/simulated/{wildcards.sim} "
        "{params.args} --nproc {threads} > {log} 2>&1"
