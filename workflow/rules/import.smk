rule import_geometry:
    """Crystal, symmetry, corrections and the Miller-index lookup grid -> geometry.nxs."""
    input:
        script=script("import_geometry"),
        expt=lambda wc: sweep_expt(wc.dataset),
    output:
        f"{RESULTS}/{{dataset}}/geometry.nxs",
    log:
        "logs/import_geometry/{dataset}.log",
    conda:
        "../../envs/diffuseflow.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        spacing=lambda wc: " ".join(
            map(str, setting(wc.dataset, "import", "sample_spacing"))
        ),
        compat=compat_flag(),
        select=lambda wc: selection_args(wc.dataset),
    shell:
        "python {input.script:q} {input.expt:q} {params.select} "
        "--sample_spacing {params.spacing} {params.compat} --outfile {output:q} "
        "> {log:q} 2>&1"


rule import_slab:
    """One slab job of a split import (config `slabs` > 1): its frame-chunks of the stack."""
    input:
        script=script("import_data"),
        expt=lambda wc: sweep_expt(wc.sweep),
    output:
        temp(f"{RESULTS}/{{sweep}}/slabs/{{stem,data|bkg_data}}.{{slab}}.nxs"),
    log:
        "logs/import_slab/{sweep}.{stem}.{slab}.log",
    benchmark:
        "benchmarks/import_slab/{sweep}.slab{slab}.{stem}.tsv"
    conda:
        lambda wc: import_env(wc.sweep)
    threads: config["threads"]
    resources:
        mem_mb=job_size("import", "mem_mb", "expt"),
        runtime=job_size("import", "runtime", "expt", per_slab=True),
    params:
        chunks=lambda wc: " ".join(map(str, setting(wc.sweep, "import", "chunks"))),
        untrusted=lambda wc: untrusted_args(wc.sweep),
        reader=lambda wc: setting(wc.sweep, "import", "reader"),
        compression=lambda wc: setting(wc.sweep, "import", "compression"),
        # a background sweep is never searched for peaks: no strong-pixel list
        floor=lambda wc: (
            "none"
            if wc.stem == "bkg_data"
            else setting(wc.sweep, "import", "strong_pixel_floor")
        ),
        channel=lambda wc: setting(wc.sweep, "import", "threshold_channel"),
        select=lambda wc: selection_args(wc.sweep),
        slabs=lambda wc: n_slabs(wc.sweep),
    shell:
        "python {input.script:q} {input.expt:q} {params.select} --chunks {params.chunks} "
        "{params.untrusted} --reader {params.reader} --compression {params.compression} "
        "--strong_pixel_floor {params.floor} "
        "--threshold_channel {params.channel} --slab {wildcards.slab} {params.slabs} --nproc {threads} "
        "--outfile {output:q} > {log:q} 2>&1"


rule import_data:
    """The crystal sweep's images -> int32 image stack (-1 = invalid) in data.nxs (one job,
    or the assembly of the slab jobs' parts)."""
    input:
        script=script("import_data"),
        expt=lambda wc: sweep_expt(wc.dataset),
        parts=lambda wc: slab_parts(wc.dataset, "data"),
    output:
        f"{RESULTS}/{{dataset}}/data.nxs",
    log:
        "logs/import_data/{dataset}.log",
    benchmark:
        "benchmarks/import_data/{dataset}.tsv"
    conda:
        lambda wc: import_env(wc.dataset)
    threads: config["threads"]
    resources:
        mem_mb=job_size("import", "mem_mb", "expt"),
        runtime=job_size("import", "runtime", "expt"),
    params:
        chunks=lambda wc: " ".join(map(str, setting(wc.dataset, "import", "chunks"))),
        untrusted=lambda wc: untrusted_args(wc.dataset),
        reader=lambda wc: setting(wc.dataset, "import", "reader"),
        compression=lambda wc: setting(wc.dataset, "import", "compression"),
        floor=lambda wc: setting(wc.dataset, "import", "strong_pixel_floor"),
        channel=lambda wc: setting(wc.dataset, "import", "threshold_channel"),
        select=lambda wc: selection_args(wc.dataset),
        gather=lambda wc, input: gather_args(input.parts),
    shell:
        "python {input.script:q} {input.expt:q} {params.select} --chunks {params.chunks} "
        "{params.untrusted} --reader {params.reader} --compression {params.compression} "
        "--strong_pixel_floor {params.floor} "
        "--threshold_channel {params.channel} {params.gather} "
        "--nproc {threads} --outfile {output:q} "
        "> {log:q} 2>&1"


rule import_background:
    """The background sweep's images -> bkg_data.nxs (same import as the crystal sweep)."""
    input:
        script=script("import_data"),
        expt=lambda wc: sweep_expt(wc.background),
        parts=lambda wc: slab_parts(wc.background, "bkg_data"),
    output:
        f"{RESULTS}/{{background}}/bkg_data.nxs",
    log:
        "logs/import_background/{background}.log",
    benchmark:
        "benchmarks/import_background/{background}.tsv"
    conda:
        lambda wc: import_env(wc.background)
    threads: config["threads"]
    resources:
        mem_mb=job_size("import", "mem_mb", "expt"),
        runtime=job_size("import", "runtime", "expt"),
    params:
        chunks=lambda wc: " ".join(map(str, setting(wc.background, "import", "chunks"))),
        untrusted=lambda wc: untrusted_args(wc.background),
        reader=lambda wc: setting(wc.background, "import", "reader"),
        compression=lambda wc: setting(wc.background, "import", "compression"),
        channel=lambda wc: setting(wc.background, "import", "threshold_channel"),
        select=lambda wc: selection_args(wc.background),
        gather=lambda wc, input: gather_args(input.parts),
    shell:
        "python {input.script:q} {input.expt:q} {params.select} --chunks {params.chunks} "
        "{params.untrusted} --reader {params.reader} --compression {params.compression} "
        "--strong_pixel_floor none "
        "--threshold_channel {params.channel} {params.gather} "
        "--nproc {threads} --outfile {output:q} "
        "> {log:q} 2>&1"
