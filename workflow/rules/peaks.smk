rule find_peaks_slab:
    """One slab job of a split peak search: hot pixels of its frame-chunks (no fit)."""
    input:
        script=script("find_peaks"),
        geom=rules.import_geometry.output[0],
        data=rules.import_data.output[0],
    output:
        temp(f"{RESULTS}/{{dataset}}/slabs/peaks.{{slab}}.nxs"),
    log:
        "logs/find_peaks_slab/{dataset}.{slab}.log",
    benchmark:
        "benchmarks/find_peaks_slab/{dataset}.slab{slab}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    threads: config["threads"]
    resources:
        mem_mb=job_size("find_peaks", "mem_mb", "data"),
        runtime=job_size("find_peaks", "runtime", "data", per_slab=True),
    params:
        count_threshold=lambda wc: setting(wc.dataset, "find_peaks", "count_threshold"),
        slabs=lambda wc: n_slabs(wc.dataset),
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.geom:q} {input.data:q} "
        "--count_threshold {params.count_threshold} --slab {wildcards.slab} {params.slabs} "
        "{params.compat} --nproc {threads} --outfile {output:q} > {log:q} 2>&1"


rule find_peaks:
    """Hot pixels -> fractional Miller offsets -> 3-D Gaussian peak model -> peaks.nxs (one
    job, or the fit over the slab jobs' hot pixels)."""
    input:
        script=script("find_peaks"),
        geom=rules.import_geometry.output[0],
        data=rules.import_data.output[0],
        parts=lambda wc: slab_parts(wc.dataset, "peaks"),
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
        mem_mb=job_size("find_peaks", "mem_mb", "data"),
        runtime=job_size("find_peaks", "runtime", "data"),
    params:
        count_threshold=lambda wc: setting(wc.dataset, "find_peaks", "count_threshold"),
        sigma_cutoff=lambda wc: setting(wc.dataset, "find_peaks", "sigma_cutoff"),
        gather=lambda wc, input: gather_args(input.parts),
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.geom:q} {input.data:q} "
        "--count_threshold {params.count_threshold} {params.gather} "
        "--sigma_cutoff {params.sigma_cutoff} {params.compat} --nproc {threads} "
        "--outfile {output:q} > {log:q} 2>&1"


rule mask_slab:
    """One slab job of a split masking: the mask of its frame-chunks."""
    input:
        script=script("mask_peaks"),
        geom=rules.import_geometry.output[0],
        data=rules.import_data.output[0],
        peaks=rules.find_peaks.output[0],
    output:
        temp(f"{RESULTS}/{{dataset}}/slabs/mask.{{slab}}.nxs"),
    log:
        "logs/mask_slab/{dataset}.{slab}.log",
    benchmark:
        "benchmarks/mask_slab/{dataset}.slab{slab}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    threads: config["threads"]
    resources:
        mem_mb=job_size("mask_peaks", "mem_mb", "data"),
        runtime=job_size("mask_peaks", "runtime", "data", per_slab=True),
    params:
        sigma_cutoff=lambda wc: setting(wc.dataset, "mask_peaks", "sigma_cutoff"),
        slabs=lambda wc: n_slabs(wc.dataset),
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.geom:q} {input.data:q} {input.peaks:q} "
        "--sigma_cutoff {params.sigma_cutoff} --slab {wildcards.slab} {params.slabs} "
        "{params.compat} --nproc {threads} --outfile {output:q} > {log:q} 2>&1"


rule mask_peaks:
    """Pixels within sigma_cutoff of an allowed reflection, plus peak pixels -> mask.nxs (one
    job, or the assembly of the slab jobs' parts)."""
    input:
        script=script("mask_peaks"),
        geom=rules.import_geometry.output[0],
        data=rules.import_data.output[0],
        peaks=rules.find_peaks.output[0],
        parts=lambda wc: slab_parts(wc.dataset, "mask"),
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
        mem_mb=job_size("mask_peaks", "mem_mb", "data"),
        runtime=job_size("mask_peaks", "runtime", "data"),
    params:
        sigma_cutoff=lambda wc: setting(wc.dataset, "mask_peaks", "sigma_cutoff"),
        gather=lambda wc, input: gather_args(input.parts),
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.geom:q} {input.data:q} {input.peaks:q} "
        "--sigma_cutoff {params.sigma_cutoff} {params.compat} {params.gather} "
        "--nproc {threads} --outfile {output:q} > {log:q} 2>&1"
