rule bin_background:
    """Bin the crystal-free sweep into a count-rate map -> bkg_data_binned.nxs."""
    input:
        rules.import_background.output[0],
    output:
        f"{RESULTS}/{{background}}/bkg_data_binned.nxs",
    params:
        bins=lambda wc: " ".join(map(str, setting(wc.background, "bin_background", "bins"))),
        valid_range=lambda wc: " ".join(
            map(str, setting(wc.background, "bin_background", "valid_range"))
        ),
    log:
        "logs/bin_background/{background}.log",
    benchmark:
        "benchmarks/bin_background/{background}.tsv"
    threads: config["threads"]
    resources:
        mem_mb=3000,
        runtime=30,
    shell:
        "python {SCRIPTS}/bin_image_series.py {input:q} {params.bins} "
        "--valid_range {params.valid_range} --nproc {threads} --outfile {output:q} "
        "> {log:q} 2>&1"
