rule bin_background:
    """Bin the crystal-free sweep into a count-rate map -> bkg_data_binned.nxs."""
    input:
        script=script("bin_image_series"),
        data=rules.import_background.output[0],
    output:
        f"{RESULTS}/{{background}}/bkg_data_binned.nxs",
    log:
        "logs/bin_background/{background}.log",
    benchmark:
        "benchmarks/bin_background/{background}.tsv"
    conda:
        "../../envs/diffuseflow.yaml"
    threads: config["threads"]
    resources:
        mem_mb=job_size("bin", "mem_mb", "data"),
        runtime=job_size("bin", "runtime", "data"),
    params:
        bins=lambda wc: " ".join(
            map(str, setting(wc.background, "bin_background", "bins"))
        ),
        valid_range=lambda wc: " ".join(
            map(str, setting(wc.background, "bin_background", "valid_range"))
        ),
    shell:
        "python {input.script:q} {input.data:q} {params.bins} "
        "--valid_range {params.valid_range} --nproc {threads} --outfile {output:q} "
        "> {log:q} 2>&1"
