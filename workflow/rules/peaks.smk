rule find_peaks:
    """Hot pixels -> fractional Miller offsets -> 3-D Gaussian peak model -> peaks.nxs."""
    input:
        script=script("find_peaks"),
        geom=rules.import_geometry.output[0],
        data=rules.import_data.output[0],
    output:
        f"{RESULTS}/{{dataset}}/peaks.nxs",
    log:
        "logs/find_peaks/{dataset}.log",
    benchmark:
        "benchmarks/find_peaks/{dataset}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    threads: config["threads"]
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        count_threshold=lambda wc: setting(wc.dataset, "find_peaks", "count_threshold"),
        sigma_cutoff=lambda wc: setting(wc.dataset, "find_peaks", "sigma_cutoff"),
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.geom:q} {input.data:q} "
        "--count_threshold {params.count_threshold} --sigma_cutoff {params.sigma_cutoff} "
        "{params.compat} --nproc {threads} --outfile {output:q} > {log:q} 2>&1"


rule mask_peaks:
    """Pixels within sigma_cutoff of an allowed reflection, plus peak pixels -> mask.nxs."""
    input:
        script=script("mask_peaks"),
        geom=rules.import_geometry.output[0],
        data=rules.import_data.output[0],
        peaks=rules.find_peaks.output[0],
    output:
        f"{RESULTS}/{{dataset}}/mask.nxs",
    log:
        "logs/mask_peaks/{dataset}.log",
    benchmark:
        "benchmarks/mask_peaks/{dataset}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    threads: config["threads"]
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        sigma_cutoff=lambda wc: setting(wc.dataset, "mask_peaks", "sigma_cutoff"),
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.geom:q} {input.data:q} {input.peaks:q} "
        "--sigma_cutoff {params.sigma_cutoff} {params.compat} --nproc {threads} "
        "--outfile {output:q} > {log:q} 2>&1"
