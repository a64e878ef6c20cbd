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
    shell:
        "python {input.script:q} {input.expt:q} --sample_spacing {params.spacing} "
        "{params.compat} --outfile {output:q} > {log:q} 2>&1"


rule import_data:
    """The crystal sweep's images -> int32 image stack (-1 = invalid) in data.nxs."""
    input:
        script=script("import_data"),
        expt=lambda wc: sweep_expt(wc.dataset),
    output:
        f"{RESULTS}/{{dataset}}/data.nxs",
    log:
        "logs/import_data/{dataset}.log",
    benchmark:
        "benchmarks/import_data/{dataset}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    threads: config["threads"]
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        chunks=lambda wc: " ".join(map(str, setting(wc.dataset, "import", "chunks"))),
        untrusted=lambda wc: untrusted_args(wc.dataset),
    shell:
        "python {input.script:q} {input.expt:q} --chunks {params.chunks} "
        "{params.untrusted} --nproc {threads} --outfile {output:q} > {log:q} 2>&1"


rule import_background:
    """The background sweep's images -> bkg_data.nxs (same import as the crystal sweep)."""
    input:
        script=script("import_data"),
        expt=lambda wc: sweep_expt(wc.background),
    output:
        f"{RESULTS}/{{background}}/bkg_data.nxs",
    log:
        "logs/import_background/{background}.log",
    benchmark:
        "benchmarks/import_background/{background}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    threads: config["threads"]
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        chunks=lambda wc: " ".join(map(str, setting(wc.background, "import", "chunks"))),
        untrusted=lambda wc: untrusted_args(wc.background),
    shell:
        "python {input.script:q} {input.expt:q} --chunks {params.chunks} "
        "{params.untrusted} --nproc {threads} --outfile {output:q} > {log:q} 2>&1"
