rule integrate_slab:
    """One slab job of a split integration: partial sums of its frame-chunks."""
    input:
        script=script("integrate"),
        geom=rules.import_geometry.output[0],
        data=rules.import_data.output[0],
        mask=rules.mask_peaks.output[0],
    output:
        temp(f"{RESULTS}/{{dataset}}/slabs/integrated.{{slab}}.nxs"),
    log:
        "logs/integrate_slab/{dataset}.{slab}.log",
    benchmark:
        "benchmarks/integrate_slab/{dataset}.slab{slab}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    threads: config["threads"]
    resources:
        mem_mb=job_size("integrate", "mem_mb", "data"),
        runtime=job_size("integrate", "runtime", "data", per_slab=True),
    params:
        subdivide=lambda wc: " ".join(
            map(str, setting(wc.dataset, "integrate", "subdivide"))
        ),
        max_spread=lambda wc: setting(wc.dataset, "integrate", "max_spread"),
        slabs=lambda wc: n_slabs(wc.dataset),
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.geom:q} {input.data:q} --mask {input.mask:q} "
        "--subdivide {params.subdivide} --max_spread {params.max_spread} "
        "--slab {wildcards.slab} {params.slabs} {params.compat} --nproc {threads} "
        "--outfile {output:q} > {log:q} 2>&1"


rule integrate:
    """Valid, unmasked pixels summed per voxel of the subdivided Miller grid and rotation
    pass -> integrated.nxs (one job, or the slab jobs' partial sums folded in order)."""
    input:
        script=script("integrate"),
        geom=rules.import_geometry.output[0],
        data=rules.import_data.output[0],
        mask=rules.mask_peaks.output[0],
        parts=lambda wc: slab_parts(wc.dataset, "integrated"),
    output:
        f"{RESULTS}/{{dataset}}/integrated.nxs",
    log:
        "logs/integrate/{dataset}.log",
    benchmark:
        "benchmarks/integrate/{dataset}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    threads: config["threads"]
    resources:
        mem_mb=job_size("integrate", "mem_mb", "data"),
        runtime=job_size("integrate", "runtime", "data"),
    params:
        subdivide=lambda wc: " ".join(
            map(str, setting(wc.dataset, "integrate", "subdivide"))
        ),
        max_spread=lambda wc: setting(wc.dataset, "integrate", "max_spread"),
        gather=lambda wc, input: gather_args(input.parts),
        compat=compat_flag(),
    shell:
        "python {input.script:q} {input.geom:q} {input.data:q} --mask {input.mask:q} "
        "--subdivide {params.subdivide} --max_spread {params.max_spread} {params.gather} "
        "{params.compat} --nproc {threads} --outfile {output:q} > {log:q} 2>&1"
