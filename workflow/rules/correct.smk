rule correct:
    """Count rate minus the binned background, over solid angle, polarisation, efficiency
    and attenuation; Miller indices in the asymmetric unit -> corrected.nxs."""
    input:
        script=script("correct"),
        geom=rules.import_geometry.output[0],
        integrated=rules.integrate.output[0],
        background=lambda wc: (
            f"{RESULTS}/{DATASETS[wc.dataset]['background']}/bkg_data_binned.nxs"
            if DATASETS[wc.dataset].get("background")
            else []
        ),
    output:
        f"{RESULTS}/{{dataset}}/corrected.nxs",
    log:
        "logs/correct/{dataset}.log",
    benchmark:
        "benchmarks/correct/{dataset}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        background=lambda wc, input: (
            f"--background {shlex.quote(input.background)}" if input.background else ""
        ),
        switches=lambda wc: " ".join(
            f"--{key}" if setting(wc.dataset, "correct", key) else f"--no-{key}"
            for key in ("attenuation", "efficiency", "polarization", "lorentz")
        ),
        p1=lambda wc: "--p1" if setting(wc.dataset, "correct", "p1") else "",
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.geom:q} {input.integrated:q} {params.background} "
        "{params.switches} {params.p1} {params.compat} --outfile {output:q} > {log:q} 2>&1"
