rule import_geometry:
    """Crystal, symmetry, corrections and the Miller-index lookup grid -> geometry.nxs."""
    input:
        expt=lambda wc: sweep_expt(wc.dataset),
    output:
        f"{RESULTS}/{{dataset}}/geometry.nxs",
    params:
        spacing=lambda wc: " ".join(map(str, setting(wc.dataset, "import", "sample_spacing"))),
        compat=compat_flag(),
    log:
        "logs/import_geometry/{dataset}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python {SCRIPTS}/import_geometry.py {input.expt:q} --sample_spacing {params.spacing} "
        "{params.compat} --outfile {output:q} > {log:q} 2>&1"


rule import_data:
    """The crystal sweep's images -> int32 image stack (-1 = invalid) in data.nxs."""
    input:
        expt=lambda wc: sweep_expt(wc.dataset),
    output:
        f"{RESULTS}/{{dataset}}/data.nxs",
    params:
        chunks=lambda wc: " ".join(map(str, setting(wc.dataset, "import", "chunks"))),
        untrusted=lambda wc: untrusted_args(wc.dataset),
    log:
        "logs/import_data/{dataset}.log",
    benchmark:
        "benchmarks/import_data/{dataset}.tsv"
    threads: config["threads"]
    resources:
        mem_mb=3000,
        runtime=60,
    shell:
        "python {SCRIPTS}/import_data.py {input.expt:q} --chunks {params.chunks} "
        "{params.untrusted} --nproc {threads} --outfile {output:q} > {log:q} 2>&1"


rule import_background:
    """The background sweep's images -> bkg_data.nxs (same import as the crystal sweep)."""
    input:
        expt=lambda wc: sweep_expt(wc.background),
    output:
        f"{RESULTS}/{{background}}/bkg_data.nxs",
    params:
        chunks=lambda wc: " ".join(map(str, setting(wc.background, "import", "chunks"))),
        untrusted=lambda wc: untrusted_args(wc.background),
    log:
        "logs/import_background/{background}.log",
    benchmark:
        "benchmarks/import_background/{background}.tsv"
    threads: config["threads"]
    resources:
        mem_mb=3000,
        runtime=60,
    shell:
        "python {SCRIPTS}/import_data.py {input.expt:q} --chunks {params.chunks} "
        "{params.untrusted} --nproc {threads} --outfile {output:q} > {log:q} 2>&1"
